/**
 * Rehydrating a stream's state: a live fold of its events, a kept Live state
 * plus the events after it, or a stored snapshot plus its tail.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import type { EventDecodeError, EventStoreError } from "../Errors.js"
import type * as Projections from "../Projections.js"
import type * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"
import type * as StateCache from "./stateCache.js"

/** @internal what a load gives: the stream's version and its state. */
export interface Loaded<S> {
  readonly version: number
  readonly state: Option.Option<S>
  /** Whether the stream is archived, as the read that loaded it told. */
  readonly archived: boolean
}

/** @internal what loading needs from its session. */
export interface Deps {
  readonly storage: Storage.Storage
  /** The operations to read with: the session's transaction once it holds locks, else the storage. */
  readonly ops: () => Storage.Operations
  readonly registry: Projections.Registry
  readonly liveStates: StateCache.StateCache | undefined
}

const forFold: Storage.ReadOptions = { forFold: true }

const streamKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`

/** @internal the loaders of one session. */
export const make = ({ liveStates, ops, registry, storage }: Deps) => {
  const foldRows = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    from: Option.Option<S>,
    version: number,
    rows: Storage.StreamEvents,
    archived = rows.archived === true
  ): Effect.Effect<Loaded<S>, EventDecodeError> => {
    if (!Envelope.readsEnvelopes(aggregate)) {
      if (rows.length === 0) return Effect.succeed({ version, state: from, archived })
      const folded = Envelope.foldStored(aggregate, Option.isSome(from) ? from.value : aggregate.initial, rows)
      return Either.isLeft(folded)
        ? Effect.fail(folded.left)
        : Effect.succeed({ version: rows[rows.length - 1].version, state: Option.some(folded.right), archived })
    }
    const envelopes = Envelope.decodeAll(aggregate, rows)
    if (Either.isLeft(envelopes)) return Effect.fail(envelopes.left)
    const list = envelopes.right
    return Effect.succeed({
      version: list.length === 0 ? version : list[list.length - 1].version,
      state: Aggregate.foldFrom(aggregate, from, list),
      archived
    })
  }

  const load = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    tenant: string,
    id: string,
    options?: Storage.ReadOptions
  ): Effect.Effect<Loaded<S>, EventStoreError | EventDecodeError> =>
    Effect.flatMap(
      // A whole stream folded without envelopes needs only its events' versions, types and data.
      ops().readStream(tenant, id, options === undefined && !Envelope.readsEnvelopes(aggregate) ? forFold : options),
      (rows) => foldRows(aggregate, Option.none(), 0, rows)
    )

  // Live aggregates of a store that keeps states: the kept state plus the
  // events after it. Inside a caller's transaction the cache is not used at
  // all: what it reads could still roll back, and its snapshot (under
  // REPEATABLE READ) may be older than what was kept.
  const loadKept = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    tenant: string,
    id: string,
    codec: Aggregate.StateCodec<S>,
    cache: StateCache.StateCache
  ): Effect.Effect<Loaded<S>, EventStoreError | EventDecodeError> =>
    Effect.flatMap(storage.joined, (joined): Effect.Effect<Loaded<S>, EventStoreError | EventDecodeError> => {
      if (joined) return load(aggregate, tenant, id)
      const key = streamKey(tenant, id)
      // Folds `rows` onto `from` and keeps the result, with the sequence of its last event.
      const foldAndKeep = (from: Option.Option<S>, version: number, rows: ReadonlyArray<Storage.StoredEvent>, archived: boolean) =>
        Effect.map(foldRows(aggregate, from, version, rows, archived), (loaded) => {
          if (rows.length > 0 && Option.isSome(loaded.state)) {
            const data = codec.encode(loaded.state.value)
            if (Either.isRight(data)) {
              cache.set(key, { aggregate, version: loaded.version, sequence: rows[rows.length - 1].sequence, data: data.right })
            }
          }
          return loaded
        })
      const loadAll = () => Effect.flatMap(ops().readStream(tenant, id), (rows) => foldAndKeep(Option.none(), 0, rows, rows.archived === true))
      const kept = cache.get(key, aggregate)
      if (kept === undefined) return loadAll()
      const state = codec.decode(kept.data)
      if (Either.isLeft(state)) {
        cache.delete(key)
        return loadAll()
      }
      // The tail starts at the kept event itself: the same sequence there proves the
      // stream is the one that was kept (not one reset or restored under this process).
      return Effect.flatMap(ops().readStream(tenant, id, { fromVersion: kept.version }), (rows) => {
        if (rows.length === 0 || rows[0].version !== kept.version || rows[0].sequence !== kept.sequence) {
          cache.delete(key)
          return loadAll()
        }
        const archived = rows.archived === true
        return rows.length === 1
          ? Effect.succeed<Loaded<S>>({ version: kept.version, state: Option.some(state.right), archived })
          : foldAndKeep(Option.some(state.right), kept.version, rows.slice(1), archived)
      }).pipe(Effect.tapError(() => Effect.sync(() => cache.delete(key))))
    })

  // Inline and Async aggregates: the stored snapshot plus the events after it,
  // in one round trip. An Inline snapshot is current, so no event is read.
  const loadLatest = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    tenant: string,
    id: string
  ): Effect.Effect<Loaded<S>, EventStoreError | EventDecodeError> => {
    const versions = registry.storedSnapshotVersionsOf(aggregate)
    const codec = Aggregate.stateCodec(aggregate)
    if (codec === undefined) return load(aggregate, tenant, id)
    if (versions.length === 0) {
      return liveStates === undefined ? load(aggregate, tenant, id) : loadKept(aggregate, tenant, id, codec, liveStates)
    }
    return Effect.flatMap(ops().loadSnapshot(tenant, id, aggregate.name, versions), ({ archived, snapshot, tail }) => {
      if (snapshot === undefined) return foldRows(aggregate, Option.none(), 0, tail, archived === true)
      const decoded = codec.decode(snapshot.data)
      // A snapshot the state Schema no longer reads is rebuilt from the events, not trusted.
      if (Either.isLeft(decoded)) return load(aggregate, tenant, id)
      return foldRows(aggregate, Option.some(decoded.right), snapshot.streamVersion ?? 0, tail, archived === true)
    })
  }

  return { load, loadLatest }
}
