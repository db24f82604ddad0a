/**
 * The one envelope builder, and the one way to decode a stored event: the
 * session, Inline projections and the daemon all build envelopes here.
 *
 * @internal
 */
import * as Either from "effect/Either"
import type * as Aggregate from "../Aggregate.js"
import { EventDecodeError } from "../Errors.js"
import type { EventEnvelope, EventMetadata } from "../EventEnvelope.js"
import type * as Storage from "../Storage.js"

/** @internal where an event stands: in its stream, in the global log, in time. */
export interface Position {
  readonly streamId: string
  readonly version: number
  readonly sequence: number
  readonly type: string
  readonly timestamp: Date
  readonly tenantId: string
}

/** @internal an envelope of `data` at `position` with `metadata`. */
export const make = <E>(position: Position, data: E, metadata: EventMetadata): EventEnvelope<E> => ({
  streamId: position.streamId,
  version: position.version,
  sequence: position.sequence,
  type: position.type,
  data,
  timestamp: position.timestamp,
  tenantId: position.tenantId,
  correlationId: metadata.correlationId,
  causationId: metadata.causationId,
  headers: metadata.headers ?? {}
})

/** @internal the envelope of a stored event around its decoded data. */
export const ofStored = <E>(stored: Storage.StoredEvent, data: E): EventEnvelope<E> => make(stored, data, stored.metadata)

/**
 * @internal the envelope of a stored event decoded by `codec`: its type the
 * one it was read as (an alias's current name), as its data's `_tag`.
 */
export const ofDecoded = <E>(codec: Aggregate.Codec<any>, stored: Storage.StoredEvent, data: E): EventEnvelope<E> => {
  const type = codec.typeOf(stored.type)
  return type === stored.type ? make(stored, data, stored.metadata) : make({ ...stored, type }, data, stored.metadata)
}

/** @internal a stored event decoded by its aggregate's Schema, or the error naming it. */
export const decodeStored = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  stored: Storage.StoredEvent
): Either.Either<EventEnvelope<E>, EventDecodeError> => {
  const decoded = aggregate.codec.decode(stored.type, stored.data)
  return Either.isRight(decoded)
    ? Either.right(ofDecoded(aggregate.codec, stored, decoded.right))
    : Either.left(
      new EventDecodeError({ streamId: stored.streamId, version: stored.version, eventType: stored.type, message: decoded.left })
    )
}

/** @internal stored events decoded in order; the first that does not decode fails all. */
export const decodeAll = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  rows: ReadonlyArray<Storage.StoredEvent>
): Either.Either<Array<EventEnvelope<E>>, EventDecodeError> => {
  const out: Array<EventEnvelope<E>> = new Array(rows.length)
  for (let i = 0; i < rows.length; i++) {
    const decoded = decodeStored(aggregate, rows[i])
    if (Either.isLeft(decoded)) return Either.left(decoded.left)
    out[i] = decoded.right
  }
  return Either.right(out)
}

/** @internal the type name of an event as the user gave it (its `_tag`). */
export const tagOf = (event: unknown): string =>
  event !== null && typeof event === "object" && typeof (event as any)._tag === "string"
    ? (event as any)._tag
    : typeof event

/**
 * @internal stored events decoded, then folded onto `state`, without an
 * envelope per event: for an `evolve` declared with two
 * parameters, which never reads one. The first event that does not decode
 * fails all, as `decodeAll` does.
 */
export const foldStored = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  state: S,
  rows: ReadonlyArray<Storage.StoredEvent>
): Either.Either<S, EventDecodeError> => {
  const { codec, evolve } = aggregate
  // Every event decoded before evolve runs, as `decodeAll` then a fold would:
  // a payload that does not decode fails the load whatever evolve does.
  const events: Array<E> = new Array(rows.length)
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]
    const decoded = codec.decode(row.type, row.data)
    if (Either.isLeft(decoded)) {
      return Either.left(new EventDecodeError({ streamId: row.streamId, version: row.version, eventType: row.type, message: decoded.left }))
    }
    events[i] = decoded.right
  }
  for (let i = 0; i < events.length; i++) state = (evolve as (state: S, event: E) => S)(state, events[i])
  return Either.right(state)
}

/**
 * @internal whether an aggregate's `evolve` may read envelopes: unless it
 * declares one or two parameters and no default or rest parameter (which
 * `length` leaves out: those get envelopes).
 */
export const readsEnvelopes = (aggregate: Aggregate.Any): boolean => {
  const declared = aggregate.evolve.length
  return declared === 0 || declared >= 3 || defaultsOrRest(aggregate.evolve)
}

// Whether a function's parameter list holds a default or a rest parameter,
// which `length` does not count: `(state, event, envelope = x)` and
// `(state, event, ...rest)` have length 2 yet read a third argument. A bare
// arrow (`state => ...`) has neither; otherwise any default or rest shows up
// before the first closing parenthesis. Read once per function.
const defaultsOrRestOf = new WeakMap<Function, boolean>()
const defaultsOrRest = (f: Function): boolean => {
  let known = defaultsOrRestOf.get(f)
  if (known === undefined) {
    const source = Function.prototype.toString.call(f)
    const arrow = source.indexOf("=>")
    const open = source.indexOf("(")
    const bare = arrow !== -1 && (open === -1 || arrow < open)
    const head = source.slice(0, source.indexOf(")") + 1)
    known = !bare && (head.includes("=") || head.includes("..."))
    defaultsOrRestOf.set(f, known)
  }
  return known
}
