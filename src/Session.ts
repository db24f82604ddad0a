/**
 * The unit of work. A session collects pending appends, keeps the identity map
 * of states it fetched or saved, and writes everything in one transaction on
 * `saveChanges`. This is the one engine both stores share: it speaks to them
 * only through the `Storage` port.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Aggregate from "./Aggregate.js"
import {
  ConcurrencyError,
  EventDecodeError,
  EventEncodeError,
  type EventStoreError,
  InvalidExpectedVersionError,
  type InvalidStreamIdError,
  StreamExistsError,
  StreamLockedError
} from "./Errors.js"
import type { EventEnvelope, EventMetadata } from "./EventEnvelope.js"
import { currentMetadata, currentTenant, EventStore } from "./internal/store.js"
import type * as Storage from "./Storage.js"
import * as StreamId from "./StreamId.js"

/**
 * A stream fetched for writing: its state and version at fetch time, and the
 * way to append to it within the session.
 *
 * @since 0.1.0
 */
export interface EventStream<S, E> {
  readonly id: string
  /** The state at fetch time; None for a stream with no events. */
  readonly aggregate: Option.Option<S>
  /** The stream version at fetch time (0 for a stream with no events). */
  readonly version: number
  readonly appendOne: (event: E) => Effect.Effect<void>
  readonly appendMany: (events: Iterable<E>) => Effect.Effect<void>
  /** Makes the save fail with `ConcurrencyError` if the stream moved since the fetch, even with nothing appended. */
  readonly alwaysEnforceConsistency: (on?: boolean) => Effect.Effect<void>
}

/**
 * Options of `fetchForWriting`.
 *
 * @since 0.1.0
 */
export interface FetchOptions {
  readonly expectedVersion?: number | undefined
  readonly alwaysEnforceConsistency?: boolean | undefined
}

/**
 * Options of `fetchForExclusiveWriting`.
 *
 * @since 0.1.0
 */
export interface ExclusiveFetchOptions extends FetchOptions {
  /** How long to wait for the stream's lock (default: the store's, 5 seconds). */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * Bounds for time travel: the state as of a version or a moment.
 *
 * @since 0.1.0
 */
export interface AggregateStreamOptions {
  readonly version?: number | undefined
  readonly timestamp?: Date | undefined
}

/**
 * Bounds for reading raw events.
 *
 * @since 0.1.0
 */
export interface ReadStreamOptions {
  readonly fromVersion?: number | undefined
  readonly toVersion?: number | undefined
  readonly timestamp?: Date | undefined
}

/**
 * What one stream got from a save.
 *
 * @since 0.1.0
 */
export interface SavedStream {
  readonly streamId: string
  readonly previousVersion: number
  readonly version: number
  readonly sequences: ReadonlyArray<number>
}

/**
 * The outcome of `saveChanges`: one entry per stream written or asserted.
 *
 * @since 0.1.0
 */
export interface SaveResult {
  readonly streams: ReadonlyArray<SavedStream>
}

/**
 * Errors a fetch can fail with.
 *
 * @since 0.1.0
 */
export type FetchError =
  | ConcurrencyError
  | EventStoreError
  | EventDecodeError
  | InvalidStreamIdError
  | InvalidExpectedVersionError

/**
 * Errors `saveChanges` can fail with.
 *
 * @since 0.1.0
 */
export type SaveError = ConcurrencyError | StreamExistsError | EventEncodeError | EventStoreError

/**
 * The session's operations (see the module-level functions for their meaning).
 *
 * @since 0.1.0
 */
export interface SessionShape {
  readonly fetchForWriting: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: FetchOptions
  ) => Effect.Effect<EventStream<S, E>, FetchError>
  readonly fetchForExclusiveWriting: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: ExclusiveFetchOptions
  ) => Effect.Effect<EventStream<S, E>, FetchError | StreamLockedError>
  readonly fetchLatest: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly aggregateStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: AggregateStreamOptions
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly readStream: (
    id: string,
    options?: ReadStreamOptions
  ) => Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError>
  readonly startStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>
  ) => Effect.Effect<void, InvalidStreamIdError>
  readonly append: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>,
    options?: { readonly expectedVersion?: number | undefined }
  ) => Effect.Effect<void, InvalidStreamIdError | InvalidExpectedVersionError>
  readonly saveChanges: Effect.Effect<SaveResult, SaveError>
  /** @internal the identity-map entry of a stream: its state and version as this session last knew them. */
  readonly known: (aggregate: Aggregate.Any, id: string) => Option.Option<Known<any>>
}

/**
 * The session service. Each `Session.layer` build is a fresh unit of work.
 *
 * @since 0.1.0
 */
export class Session extends Context.Tag("effect-chronicle/Session")<Session, SessionShape>() {}

/** @internal */
export interface Known<S> {
  readonly state: Option.Option<S>
  readonly version: number
  /** True when the state is the outcome of this session's own save. */
  readonly saved: boolean
}

interface PendingEvent {
  readonly event: unknown
  readonly metadata: EventMetadata
}

interface Pending {
  readonly aggregate: Aggregate.Any
  readonly streamId: string
  /** start: `startStream` (a taken id is StreamExistsError); otherwise an optimistic expectation. */
  mode: "fetched" | "start" | "append"
  expected: Storage.Expected
  enforce: boolean
  readonly events: Array<PendingEvent>
}

const identityKey = (aggregate: Aggregate.Any, id: string) => `${aggregate.name}\u0000${id}`

const validateExpected = (streamId: string, expected: unknown): Effect.Effect<void, InvalidExpectedVersionError> =>
  expected === undefined || (typeof expected === "number" && Number.isSafeInteger(expected) && expected >= 0)
    ? Effect.void
    : Effect.fail(new InvalidExpectedVersionError({ streamId, expectedVersion: expected }))

/** @internal */
export const toEnvelope = <E>(stored: Storage.StoredEvent, data: E): EventEnvelope<E> => ({
  streamId: stored.streamId,
  version: stored.version,
  sequence: stored.sequence,
  type: stored.type,
  data,
  timestamp: stored.timestamp,
  tenantId: stored.tenantId,
  correlationId: stored.metadata.correlationId,
  causationId: stored.metadata.causationId,
  headers: stored.metadata.headers ?? {}
})

/** @internal */
export const decodeStored = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  stored: Storage.StoredEvent
): Either.Either<EventEnvelope<E>, EventDecodeError> =>
  Either.match(aggregate.codec.decode(stored.type, stored.data), {
    onLeft: (message) =>
      Either.left(
        new EventDecodeError({ streamId: stored.streamId, version: stored.version, eventType: stored.type, message })
      ),
    onRight: (event) => Either.right(toEnvelope(stored, event))
  })

const decodeAll = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  rows: ReadonlyArray<Storage.StoredEvent>
): Effect.Effect<Array<EventEnvelope<E>>, EventDecodeError> =>
  Effect.suspend(() => {
    const out: Array<EventEnvelope<E>> = new Array(rows.length)
    for (let i = 0; i < rows.length; i++) {
      const decoded = decodeStored(aggregate, rows[i])
      if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
      out[i] = decoded.right
    }
    return Effect.succeed(out)
  })

const tagOf = (event: unknown): string =>
  event !== null && typeof event === "object" && typeof (event as any)._tag === "string"
    ? (event as any)._tag
    : typeof event

/**
 * Creates a session; its scope bounds any lock it takes.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<SessionShape, never, EventStore | Scope.Scope> = Effect.gen(function*() {
  const store = yield* EventStore
  const scope = yield* Effect.scope
  const storage = store.storage
  const pending = new Map<string, Pending>()
  const identity = new Map<string, Known<any>>()
  // The transaction that holds this session's exclusive locks, from the first
  // exclusive fetch until the save (or the end of the session's scope).
  let transaction: Storage.Transaction | undefined

  const ops = (): Storage.Operations => transaction ?? storage

  const load = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: Storage.ReadOptions
  ) =>
    ops().readStream(id, options).pipe(
      Effect.flatMap((rows) => decodeAll(aggregate, rows)),
      Effect.map((envelopes) => ({
        version: envelopes.length === 0 ? 0 : envelopes[envelopes.length - 1].version,
        state: Aggregate.fold(aggregate, envelopes)
      }))
    )

  const pendingFor = (aggregate: Aggregate.Any, id: string, mode: Pending["mode"], expected: Storage.Expected) => {
    let entry = pending.get(id)
    if (entry === undefined) {
      entry = { aggregate, streamId: id, mode, expected, enforce: false, events: [] }
      pending.set(id, entry)
    } else {
      entry.mode = mode
      entry.expected = expected
    }
    return entry
  }

  const appendTo = (entry: Pending, events: Iterable<unknown>) =>
    Effect.flatMap(FiberRef.get(currentMetadata), (metadata) =>
      Effect.sync(() => {
        for (const event of events) entry.events.push({ event, metadata })
      }))

  const streamFor = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    loaded: { readonly version: number; readonly state: Option.Option<S> },
    options: FetchOptions | undefined
  ): Effect.Effect<EventStream<S, E>, ConcurrencyError> => {
    if (options?.expectedVersion !== undefined && options.expectedVersion !== loaded.version) {
      return Effect.fail(
        new ConcurrencyError({ streamId: id, expectedVersion: options.expectedVersion, actualVersion: loaded.version })
      )
    }
    return Effect.sync(() => {
      // The last fetch of a stream sets the expectation its pending action is saved with.
      const entry = pendingFor(aggregate, id, "fetched", loaded.version)
      if (options?.alwaysEnforceConsistency) entry.enforce = true
      identity.set(identityKey(aggregate, id), { state: loaded.state, version: loaded.version, saved: false })
      return {
        id,
        aggregate: loaded.state,
        version: loaded.version,
        appendOne: (event) => appendTo(entry, [event]),
        appendMany: (events) => appendTo(entry, events),
        alwaysEnforceConsistency: (on = true) => Effect.sync(() => void (entry.enforce = on))
      }
    })
  }

  const fetchForWriting: SessionShape["fetchForWriting"] = (aggregate, id, options) =>
    Effect.gen(function*() {
      yield* StreamId.validate(id)
      yield* validateExpected(id, options?.expectedVersion)
      const loaded = yield* load(aggregate, id)
      return yield* streamFor(aggregate, id, loaded, options)
    })

  const fetchForExclusiveWriting: SessionShape["fetchForExclusiveWriting"] = (aggregate, id, options) =>
    Effect.gen(function*() {
      yield* StreamId.validate(id)
      yield* validateExpected(id, options?.expectedVersion)
      const timeout = options?.timeout === undefined ? store.defaultLockTimeout : Duration.decode(options.timeout)
      if (transaction === undefined) {
        transaction = yield* Scope.extend(storage.begin, scope)
      }
      const tenant = yield* FiberRef.get(currentTenant)
      const locked = yield* transaction.lock(id, aggregate.name, tenant, timeout)
      if (!locked) {
        return yield* new StreamLockedError({ streamId: id, timeoutMillis: Duration.toMillis(timeout) })
      }
      const loaded = yield* load(aggregate, id)
      return yield* streamFor(aggregate, id, loaded, options)
    })

  const aggregateStream: SessionShape["aggregateStream"] = (aggregate, id, options) =>
    Effect.zipRight(
      StreamId.validate(id),
      Effect.map(
        load(aggregate, id, { toVersion: options?.version, toTimestamp: options?.timestamp }),
        (loaded) => loaded.state
      )
    )

  const fetchLatest: SessionShape["fetchLatest"] = (aggregate, id) =>
    Effect.suspend(() => {
      const known = identity.get(identityKey(aggregate, id))
      // After our own save the identity map holds the newest state we can know of.
      if (known !== undefined && known.saved) return Effect.succeed(known.state)
      return aggregateStream(aggregate, id)
    })

  const readStream: SessionShape["readStream"] = (id, options) =>
    Effect.zipRight(
      StreamId.validate(id),
      Effect.map(
        ops().readStream(id, {
          fromVersion: options?.fromVersion,
          toVersion: options?.toVersion,
          toTimestamp: options?.timestamp
        }),
        (rows) => rows.map((row) => toEnvelope<unknown>(row, row.data))
      )
    )

  const startStream: SessionShape["startStream"] = (aggregate, id, events) =>
    Effect.flatMap(StreamId.validate(id), () => appendTo(pendingFor(aggregate, id, "start", 0), events))

  const append: SessionShape["append"] = (aggregate, id, events, options) =>
    Effect.gen(function*() {
      yield* StreamId.validate(id)
      yield* validateExpected(id, options?.expectedVersion)
      const existing = pending.get(id)
      const entry = existing === undefined
        ? pendingFor(aggregate, id, "append", options?.expectedVersion ?? "any")
        : existing
      if (existing !== undefined && options?.expectedVersion !== undefined) {
        entry.expected = options.expectedVersion
      }
      yield* appendTo(entry, events)
    })

  const encodeBatch = (tenantId: string, entries: ReadonlyArray<Pending>) =>
    Effect.suspend((): Effect.Effect<Storage.CommitBatch, EventEncodeError> => {
      const streams: Array<Storage.StreamWrite> = []
      for (const entry of entries) {
        const events: Array<Storage.NewEvent> = []
        for (const { event, metadata } of entry.events) {
          const encoded = entry.aggregate.codec.encode(event)
          if (Either.isLeft(encoded)) {
            return Effect.fail(
              new EventEncodeError({ streamId: entry.streamId, eventType: tagOf(event), message: encoded.left })
            )
          }
          events.push({ type: encoded.right.type, data: encoded.right.data, metadata })
        }
        streams.push({
          streamId: entry.streamId,
          aggregateType: entry.aggregate.name,
          expected: entry.expected,
          events
        })
      }
      return Effect.succeed({ tenantId, streams })
    })

  const conflictError = (conflict: Storage.Conflict): ConcurrencyError | StreamExistsError =>
    pending.get(conflict.streamId)?.mode === "start"
      ? new StreamExistsError({ streamId: conflict.streamId })
      : new ConcurrencyError({
        streamId: conflict.streamId,
        expectedVersion: conflict.expected,
        actualVersion: conflict.actual
      })

  // Folds the saved events onto the state this session already had at the
  // stream's previous version (the identity-map optimisation): no read needed.
  const remember = (entry: Pending, committed: Storage.CommittedStream, tenantId: string) => {
    const key = identityKey(entry.aggregate, entry.streamId)
    const known = identity.get(key)
    const baseline: Option.Option<Option.Option<unknown>> = committed.previousVersion === 0
      ? Option.some(Option.none())
      : known !== undefined && known.version === committed.previousVersion
      ? Option.some(known.state)
      : Option.none()
    if (Option.isNone(baseline)) {
      identity.delete(key)
      return
    }
    const envelopes = committed.events.map((position, i) => {
      const { event, metadata } = entry.events[i]
      return {
        streamId: entry.streamId,
        version: position.version,
        sequence: position.sequence,
        type: tagOf(event),
        data: event,
        timestamp: position.timestamp,
        tenantId,
        correlationId: metadata.correlationId,
        causationId: metadata.causationId,
        headers: metadata.headers ?? {}
      }
    })
    identity.set(key, {
      state: Aggregate.foldFrom(entry.aggregate, baseline.value, envelopes),
      version: committed.version,
      saved: true
    })
  }

  const saveChanges: Effect.Effect<SaveResult, SaveError> = Effect.gen(function*() {
    const entries = Array.from(pending.values()).filter((entry) => entry.events.length > 0 || entry.enforce)
    const tenantId = yield* FiberRef.get(currentTenant)
    const batch = yield* encodeBatch(tenantId, entries)
    const target = transaction
    // Whatever the outcome, a commit ends the transaction and its locks.
    transaction = undefined
    if (entries.length === 0) {
      if (target !== undefined) yield* target.commit(batch)
      pending.clear()
      return { streams: [] }
    }
    const result = yield* (target ?? storage).commit(batch)
    if (result._tag === "Conflicted") {
      return yield* Effect.fail(conflictError(result.conflicts[0]))
    }
    for (const committed of result.streams) {
      const entry = pending.get(committed.streamId)
      if (entry !== undefined) remember(entry, committed, tenantId)
    }
    pending.clear()
    return {
      streams: result.streams.map((s) => ({
        streamId: s.streamId,
        previousVersion: s.previousVersion,
        version: s.version,
        sequences: s.events.map((e) => e.sequence)
      }))
    }
  })

  const known: SessionShape["known"] = (aggregate, id) => Option.fromNullable(identity.get(identityKey(aggregate, id)))

  return {
    fetchForWriting,
    fetchForExclusiveWriting,
    fetchLatest,
    aggregateStream,
    readStream,
    startStream,
    append,
    saveChanges,
    known
  } satisfies SessionShape
})

/**
 * A fresh session each time it is provided; its end releases its locks and
 * rolls back anything unsaved.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Session, never, EventStore> = Layer.scoped(Session, make)

/**
 * Runs an effect in its own session.
 *
 * @since 0.1.0
 */
export const run = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, Session> | EventStore> =>
  Effect.scoped(Effect.flatMap(make, (session) => Effect.provideService(effect, Session, session)))

/**
 * Fetches a stream's state and version for writing. With `expectedVersion`,
 * fails at once with `ConcurrencyError` when the stream is at another version.
 *
 * @since 0.1.0
 */
export const fetchForWriting = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: FetchOptions
): Effect.Effect<EventStream<S, E>, FetchError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchForWriting(aggregate, id, options))

/**
 * Fetches for writing while holding the stream's lock until `saveChanges` or
 * the session's end; fails with `StreamLockedError` when the lock is not had in time.
 *
 * @since 0.1.0
 */
export const fetchForExclusiveWriting = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: ExclusiveFetchOptions
): Effect.Effect<EventStream<S, E>, FetchError | StreamLockedError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchForExclusiveWriting(aggregate, id, options))

/**
 * The current state of a stream, read-only; after `saveChanges` in the same
 * session it is the saved state, without another read.
 *
 * @since 0.1.0
 */
export const fetchLatest = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string
): Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchLatest(aggregate, id))

/**
 * A live fold of the stream, optionally as of a version or a moment (time travel).
 *
 * @since 0.1.0
 */
export const aggregateStream = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: AggregateStreamOptions
): Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.aggregateStream(aggregate, id, options))

/**
 * The stream's raw events (encoded payloads) in version order.
 *
 * @since 0.1.0
 */
export const readStream = (
  id: string,
  options?: ReadStreamOptions
): Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.readStream(id, options))

/**
 * Starts a new stream; the save fails with `StreamExistsError` when the id is taken.
 *
 * @since 0.1.0
 */
export const startStream = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>
): Effect.Effect<void, InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.startStream(aggregate, id, events))

/**
 * Appends events to a stream, joining the pending action of a stream fetched
 * in this session. Without an expected version (and no fetch) the append never
 * conflicts: it serialises on the stream.
 *
 * @since 0.1.0
 */
export const append = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>,
  options?: { readonly expectedVersion?: number | undefined }
): Effect.Effect<void, InvalidStreamIdError | InvalidExpectedVersionError, Session> =>
  Effect.flatMap(Session, (session) => session.append(aggregate, id, events, options))

/**
 * Writes everything pending in one transaction; on failure nothing is written.
 * Inside a caller's `SqlClient.withTransaction` it joins that transaction.
 *
 * @since 0.1.0
 */
export const saveChanges: Effect.Effect<SaveResult, SaveError, Session> = Effect.flatMap(
  Session,
  (session) => session.saveChanges
)
