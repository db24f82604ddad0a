/**
 * Aggregates: an event Schema, an initial state and a pure `evolve`. Pure domain
 * code: nothing here knows about storage.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as SchemaAST from "effect/SchemaAST"
import type { EventEnvelope } from "./EventEnvelope.js"
import * as EventDecoder from "./internal/eventDecoder.js"
import { textProblem } from "./internal/input.js"

/**
 * An event-sourced aggregate definition.
 *
 * @since 0.1.0
 */
export interface Aggregate<S, E, EI = any, SI = any> {
  /** The aggregate type name: stored as the stream type and used as the snapshot key. */
  readonly name: string
  /** The Schema of the stream's events; each must carry a `_tag`, stored as the event type. */
  readonly events: Schema.Schema<E, EI>
  /** The Schema of the state, required for stored (Inline/Async) snapshots. */
  readonly state: Schema.Schema<S, SI> | undefined
  /** The state before the first event. */
  readonly initial: S
  /** Folds one event into the state; must be pure. */
  readonly evolve: (state: S, event: E, envelope: EventEnvelope<E>) => S
  /** @internal */
  readonly codec: Codec<E>
}

/**
 * Any aggregate, for APIs that do not care about its types.
 *
 * @since 0.1.0
 */
export type Any = Aggregate<any, any, any, any>

/**
 * The state type of an aggregate.
 *
 * @since 0.1.0
 */
export type State<A> = A extends Aggregate<infer S, any, any, any> ? S : never

/**
 * The event type of an aggregate.
 *
 * @since 0.1.0
 */
export type Event<A> = A extends Aggregate<any, infer E, any, any> ? E : never

/** @internal */
export interface Codec<E> {
  readonly encode: (event: E) => Either.Either<{ readonly type: string; readonly data: unknown }, string>
  readonly decode: (type: string, data: unknown) => Either.Either<E, string>
  /**
   * The event types the schema knows, when they can be read off it (tagged
   * classes, structs and unions of them), and the old names of `eventTypeAliases`.
   */
  readonly tags: ReadonlySet<string> | undefined
  /** The type name a stored type is read as: its alias target, or itself. */
  readonly typeOf: (type: string) => string
}

/**
 * Old event type names mapped to the current ones, applied when stored events
 * are read (an event renamed from `OldName` to `NewName`: `{ OldName: "NewName" }`).
 * New events are written under their current name.
 *
 * @since 0.2.0
 */
export type EventTypeAliases = Readonly<Record<string, string>>

// Checks the aliases against the schema's tags (when known): an alias must name
// a current type, and must not itself be one (that type would be unreadable).
const checkAliases = (owner: string, aliases: EventTypeAliases | undefined, tags: ReadonlyArray<string> | undefined) => {
  if (aliases === undefined) return undefined
  if (aliases === null || typeof aliases !== "object" || Array.isArray(aliases)) {
    throw new TypeError(`${owner}: eventTypeAliases must be an object of old type names to current ones`)
  }
  const map = new Map<string, string>()
  for (const [from, to] of Object.entries(aliases)) {
    if (typeof to !== "string" || to.length === 0) {
      throw new TypeError(`${owner}: eventTypeAliases["${from}"] must be a current event type name, got ${JSON.stringify(to)}`)
    }
    if (tags !== undefined && !tags.includes(to)) {
      throw new TypeError(`${owner}: eventTypeAliases["${from}"] names "${to}", which is not an event type of its Schema (${tags.join(", ")})`)
    }
    if (tags !== undefined && tags.includes(from)) {
      throw new TypeError(`${owner}: eventTypeAliases["${from}"]: "${from}" is a current event type, it cannot be an alias`)
    }
    map.set(from, to)
  }
  return map
}

const tagsOf = (ast: SchemaAST.AST): Array<string> | undefined => {
  switch (ast._tag) {
    case "Union": {
      const all: Array<string> = []
      for (const member of ast.types) {
        const tags = tagsOf(member)
        if (tags === undefined) return undefined
        all.push(...tags)
      }
      return all
    }
    case "Transformation":
      // The stored type is the encoded tag, so the encoded side is the one to read.
      return tagsOf(ast.from)
    case "Refinement":
      return tagsOf(ast.from)
    case "Suspend":
      return undefined
    case "TypeLiteral": {
      const tag = ast.propertySignatures.find((p) => p.name === "_tag")
      return tag !== undefined && tag.type._tag === "Literal" && typeof tag.type.literal === "string"
        ? [tag.type.literal]
        : undefined
    }
    default:
      return undefined
  }
}

/**
 * How deep a stored payload may nest (arrays and objects). PostgreSQL parses
 * jsonb recursively under `max_stack_depth` (with its default 2 MB, between
 * 12,000 and 20,000 levels) and V8 overflows its stack in `JSON.stringify` and
 * `structuredClone` at a similar depth, so payloads are bounded well below both.
 *
 * @since 0.2.0
 */
export const maxJsonDepth = 1000

// Set by `jsonProblem` when it met -0: jsonb stores it as 0, so the value is
// then normalised to 0 on both stores (a copy, only on that rare path).
let negativeZero = false

/**
 * Why an encoded value would not come back the same from JSON (the storage
 * format of both stores), or undefined when it would. A Schema whose encoded
 * side is not JSON (a `Date` from `DateFromSelf`, `NaN`, a `bigint`), text
 * PostgreSQL cannot hold (NUL, a lone surrogate, in a value or a key) or a
 * payload nested deeper than `maxJsonDepth` is caught at the save instead of
 * poisoning the stream for every later read, or failing on one store only.
 *
 * @internal
 */
export const jsonProblem = (value: unknown, path = "$", depth = 0): string | undefined => {
  switch (typeof value) {
    case "string": {
      const problem = textProblem(value)
      return problem === undefined ? undefined : `${path} holds ${problem}, which PostgreSQL cannot store`
    }
    case "boolean":
      return undefined
    case "number":
      if (value === 0 && 1 / value < 0) negativeZero = true
      return Number.isFinite(value) ? undefined : `${path} is ${value}, which JSON cannot hold`
    case "object": {
      if (value === null) return undefined
      if (depth >= maxJsonDepth) {
        // The path of such a value is thousands of characters: its start says where.
        return `${path.length > 60 ? `${path.slice(0, 60)}…` : path} is nested more than ${maxJsonDepth} levels deep`
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          if (value[i] === undefined) return `${path}[${i}] is undefined, which JSON turns into null`
          const problem = jsonProblem(value[i], `${path}[${i}]`, depth + 1)
          if (problem !== undefined) return problem
        }
        return undefined
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) {
        return `${path} is a ${value.constructor?.name ?? "non-plain object"}, not plain JSON (encode it with a Schema that yields JSON)`
      }
      for (const key in value) {
        const field = (value as Record<string, unknown>)[key]
        if (field === undefined) continue // JSON drops it, as an absent optional field
        const keyProblem = textProblem(key)
        if (keyProblem !== undefined) return `${path} has a key holding ${keyProblem}, which PostgreSQL cannot store`
        const problem = jsonProblem(field, `${path}.${key}`, depth + 1)
        if (problem !== undefined) return problem
      }
      return undefined
    }
    default:
      return `${path} is a ${typeof value}, which JSON cannot hold`
  }
}

const withoutNegativeZero = (value: unknown): unknown => {
  if (typeof value === "number") return value === 0 ? 0 : value
  if (value === null || typeof value !== "object") return value
  if (Array.isArray(value)) return value.map(withoutNegativeZero)
  const copy: Record<string, unknown> = {}
  for (const key in value) copy[key] = withoutNegativeZero((value as Record<string, unknown>)[key])
  return copy
}

/**
 * @internal the value as both stores keep it (`-0` as `0`, as jsonb does), or
 * why it cannot be stored (see `jsonProblem`).
 */
export const toJson = (value: unknown): Either.Either<unknown, string> => {
  negativeZero = false
  const problem = jsonProblem(value)
  if (problem !== undefined) return Either.left(problem)
  return Either.right(negativeZero ? withoutNegativeZero(value) : value)
}

/** @internal */
export const makeCodec = <E, EI>(
  schema: Schema.Schema<E, EI>,
  eventTypeAliases?: EventTypeAliases,
  owner = "Aggregate.make"
): Codec<E> => {
  const tags = tagsOf(schema.ast)
  const aliases = checkAliases(owner, eventTypeAliases, tags)
  const typeOf = aliases === undefined ? (type: string) => type : (type: string) => aliases.get(type) ?? type
  const encode = Schema.encodeEither(schema as Schema.Schema<E, EI, never>)
  const decode = Schema.decodeUnknownEither(schema as Schema.Schema<E, EI, never>)
  const decodeTagged = (type: string, data: unknown) =>
    decode(data !== null && typeof data === "object" ? { ...data, _tag: type } : { _tag: type })
  const compiled = EventDecoder.compile(schema, decodeTagged)
  return {
    encode: (event) =>
      Either.match(encode(event), {
        onLeft: (error) => Either.left(ParseResult.TreeFormatter.formatErrorSync(error)),
        onRight: (encoded) => {
          if (encoded === null || typeof encoded !== "object" || typeof (encoded as any)._tag !== "string") {
            return Either.left("an event must encode to an object with a string _tag")
          }
          // The tag lives in the type column; the payload is stored without it.
          const { _tag, ...data } = encoded as Record<string, unknown>
          const typeProblem = textProblem(_tag as string)
          if (typeProblem !== undefined) return Either.left(`the event type holds ${typeProblem}, which PostgreSQL cannot store`)
          return Either.map(toJson(data), (json) => ({ type: _tag as string, data: json }))
        }
      }),
    decode: (stored, data) => {
      // An old name is read as the current one: its Schema decodes it, as any other.
      const type = typeOf(stored)
      const fast = compiled(type)
      if (fast !== undefined) {
        const event = fast(data)
        if (Either.isRight(event)) return event as unknown as Either.Either<E, string>
      }
      // Through the whole Schema: members the fast path does not take, and every failure (its message).
      const decoded = decodeTagged(type, data)
      // A Right carries no error: reused as it is rather than rebuilt.
      return Either.isRight(decoded)
        ? decoded as unknown as Either.Either<E, string>
        : Either.left(ParseResult.TreeFormatter.formatErrorSync(decoded.left))
    },
    tags: tags === undefined ? undefined : new Set([...tags, ...(aliases?.keys() ?? [])]),
    typeOf
  }
}

/** @internal */
export interface StateCodec<S> {
  readonly encode: (state: S) => Either.Either<unknown, string>
  readonly decode: (data: unknown) => Either.Either<S, string>
}

/** @internal */
export const makeStateCodec = <S, SI>(schema: Schema.Schema<S, SI>): StateCodec<S> => {
  const encode = Schema.encodeEither(schema as Schema.Schema<S, SI, never>)
  const decode = Schema.decodeUnknownEither(schema as Schema.Schema<S, SI, never>)
  return {
    encode: (state) =>
      Either.flatMap(
        Either.mapLeft(encode(state), (e) => ParseResult.TreeFormatter.formatErrorSync(e)),
        toJson
      ),
    decode: (data) => Either.mapLeft(decode(data), (e) => ParseResult.TreeFormatter.formatErrorSync(e))
  }
}

const stateCodecs = new WeakMap<object, StateCodec<any>>()

/** @internal the codec of an aggregate's state Schema (which stored snapshots need). */
export const stateCodec = <S>(aggregate: Aggregate<S, any, any, any>): StateCodec<S> | undefined => {
  if (aggregate.state === undefined) return undefined
  let codec = stateCodecs.get(aggregate)
  if (codec === undefined) {
    codec = makeStateCodec(aggregate.state)
    stateCodecs.set(aggregate, codec)
  }
  return codec
}

/**
 * Defines an aggregate.
 *
 * @example
 * const Order = Aggregate.make({ name: "Order", events: OrderEvent, initial, evolve })
 *
 * @since 0.1.0
 */
export const make = <S, E, EI, SI = unknown>(options: {
  readonly name: string
  readonly events: Schema.Schema<E, EI>
  readonly state?: Schema.Schema<S, SI> | undefined
  readonly initial: S
  /**
   * Pure: the state after one event, given its envelope as a third argument.
   * An `evolve` that declares only one or two parameters is not handed
   * envelopes when a stream is folded, which saves building one per event.
   */
  readonly evolve: (state: S, event: E, envelope: EventEnvelope<E>) => S
  /** Old event type names read as current ones (events renamed since they were stored). */
  readonly eventTypeAliases?: EventTypeAliases | undefined
}): Aggregate<S, E, EI, SI> => {
  if (typeof options.name !== "string" || options.name.length === 0) {
    throw new TypeError("Aggregate.make: name must be a non-empty string")
  }
  return {
    name: options.name,
    events: options.events,
    state: options.state,
    initial: options.initial,
    evolve: options.evolve,
    codec: makeCodec(options.events, options.eventTypeAliases, `Aggregate.make(${options.name})`)
  }
}

/**
 * Folds envelopes onto a state (the initial one when `from` is None).
 * Returns None when there is neither a starting state nor an event.
 *
 * @since 0.1.0
 */
export const foldFrom = <S, E>(
  aggregate: Aggregate<S, E, any, any>,
  from: Option.Option<S>,
  envelopes: Iterable<EventEnvelope<E>>
): Option.Option<S> => {
  // The state stays unwrapped while folding: one Option at the end, not one per event.
  let state = Option.isSome(from) ? from.value : aggregate.initial
  let folded = false
  for (const envelope of envelopes) {
    state = aggregate.evolve(state, envelope.data, envelope)
    folded = true
  }
  return folded ? Option.some(state) : from
}

/**
 * Folds envelopes into the aggregate's state; None for no events.
 *
 * @since 0.1.0
 */
export const fold = <S, E>(
  aggregate: Aggregate<S, E, any, any>,
  envelopes: Iterable<EventEnvelope<E>>
): Option.Option<S> => foldFrom(aggregate, Option.none(), envelopes)
