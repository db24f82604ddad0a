/**
 * The unit of work. A session collects pending appends, keeps the identity map
 * of states it fetched or saved, and writes everything in one transaction on
 * `saveChanges`. This is the one engine both stores share: it speaks to them
 * only through the `Storage` port.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Aggregate from "./Aggregate.js"
import type {
  EventDecodeError,
  EventStoreError,
  InvalidStreamIdError
} from "./Errors.js"
import type { EventEnvelope } from "./EventEnvelope.js"
import * as Fiber from "./internal/fiber.js"
import * as internal from "./internal/session.js"
import type { AppendErrorOf, AppendOptions, ExclusiveFetchErrorOf, FetchErrorOf, SaveError } from "./internal/sessionErrors.js"
import { EventStore } from "./internal/store.js"
import type * as Projection from "./Projection.js"

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

export type {
  AppendErrorOf,
  AppendOptions,
  ExclusiveFetchErrorOf,
  FetchError,
  FetchErrorOf,
  SaveError
} from "./internal/sessionErrors.js"

/**
 * The session's operations (see the module-level functions for their meaning).
 *
 * @since 0.1.0
 */
export interface SessionShape {
  readonly fetchForWriting: <S, E, const O extends FetchOptions = {}>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: O
  ) => Effect.Effect<EventStream<S, E>, FetchErrorOf<O>>
  readonly fetchForExclusiveWriting: <S, E, const O extends ExclusiveFetchOptions = {}>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: O
  ) => Effect.Effect<EventStream<S, E>, ExclusiveFetchErrorOf<O>>
  readonly fetchLatest: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly aggregateStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: AggregateStreamOptions
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly readStream: {
    <S, E>(
      aggregate: Aggregate.Aggregate<S, E, any, any>,
      id: string,
      options?: ReadStreamOptions
    ): Effect.Effect<ReadonlyArray<EventEnvelope<E>>, EventStoreError | EventDecodeError | InvalidStreamIdError>
    (
      id: string,
      options?: ReadStreamOptions
    ): Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError>
  }
  readonly startStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>
  ) => Effect.Effect<void, InvalidStreamIdError>
  readonly append: <S, E, const O extends AppendOptions = {}>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>,
    options?: O
  ) => Effect.Effect<void, AppendErrorOf<O>>
  readonly archiveStream: (id: string) => Effect.Effect<void, InvalidStreamIdError>
  readonly saveChanges: Effect.Effect<SaveResult, SaveError>
  readonly loadDocument: <S>(
    projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
    key: string
  ) => Effect.Effect<Option.Option<S>, EventStoreError>
}

/**
 * The session service. Each `Session.layer` build is a fresh unit of work.
 *
 * @since 0.1.0
 */
export class Session extends Context.Tag("effect-chronicle/Session")<Session, SessionShape>() {}

/**
 * Creates a session; the end of the scope releases its locks and rolls back
 * anything unsaved.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<SessionShape, never, EventStore | Scope.Scope> = Effect.flatMap(
  EventStore,
  (store) => Effect.map(Effect.acquireRelease(Effect.sync(() => internal.unsafeMake(store)), (s) => s.close), (s) => s.session)
)

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
  Fiber.provideScoped(
    effect,
    Session,
    (context) => {
      const made = internal.unsafeMake(Context.unsafeGet(context as Context.Context<EventStore>, EventStore))
      return { service: made.session, handle: made }
    },
    (made) => made.closeIfOpen()
  ) as Effect.Effect<A, E, Exclude<R, Session> | EventStore>

/**
 * Fetches a stream's state and version for writing. With `expectedVersion`,
 * fails at once with `ConcurrencyError` when the stream is at another version.
 *
 * @since 0.1.0
 */
export const fetchForWriting = <S, E, const O extends FetchOptions = {}>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: O
): Effect.Effect<EventStream<S, E>, FetchErrorOf<O>, Session> =>
  Fiber.withService(Session, (session) => session.fetchForWriting(aggregate, id, options))

/**
 * Fetches for writing while holding the stream's lock until `saveChanges` or
 * the session's end; fails with `StreamLockedError` when the lock is not had in time.
 *
 * @since 0.1.0
 */
export const fetchForExclusiveWriting = <S, E, const O extends ExclusiveFetchOptions = {}>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: O
): Effect.Effect<EventStream<S, E>, ExclusiveFetchErrorOf<O>, Session> =>
  Fiber.withService(Session, (session) => session.fetchForExclusiveWriting(aggregate, id, options))

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
  Fiber.withService(Session, (session) => session.fetchLatest(aggregate, id))

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
  Fiber.withService(Session, (session) => session.aggregateStream(aggregate, id, options))

/**
 * The stream's events in version order: given an aggregate, decoded by its
 * event Schema (`data` a full event, `_tag` included; an event it cannot
 * decode fails with `EventDecodeError`); given only an id, raw (encoded
 * payloads).
 *
 * @since 0.1.0
 */
export const readStream: {
  <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: ReadStreamOptions
  ): Effect.Effect<ReadonlyArray<EventEnvelope<E>>, EventStoreError | EventDecodeError | InvalidStreamIdError, Session>
  (
    id: string,
    options?: ReadStreamOptions
  ): Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError, Session>
} = (...args: [any, any?, any?]) => Fiber.withService(Session, (session) => (session.readStream as any)(...args)) as any

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
  Fiber.withService(Session, (session) => session.startStream(aggregate, id, events))

/**
 * Appends events to a stream, joining the pending action of a stream fetched
 * in this session. Without an expected version (and no fetch) the append never
 * conflicts: it serialises on the stream.
 *
 * @since 0.1.0
 */
export const append = <S, E, const O extends AppendOptions = {}>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>,
  options?: O
): Effect.Effect<void, AppendErrorOf<O>, Session> =>
  Fiber.withService(Session, (session) => session.append(aggregate, id, events, options))

/**
 * Archives a stream at `saveChanges`, atomically with the rest of the session
 * (after its events, so a last event and the archiving are one save). An
 * archived stream is still read (`fetchLatest`, `aggregateStream`,
 * `readStream`) but no longer written: fetches for writing fail with
 * `StreamArchivedError`, and so does a save appending to it. `EventStore.readAll`,
 * subscriptions and projections leave its events out. Archiving twice is
 * archiving once; an id with no events is left alone (it does not reserve the id).
 *
 * @since 0.2.0
 */
export const archiveStream = (id: string): Effect.Effect<void, InvalidStreamIdError, Session> =>
  Fiber.withService(Session, (session) => session.archiveStream(id))

/**
 * The stored document of a snapshot or multi-stream projection, exactly as
 * persisted (an Async one may lag: this does not fold the events after it).
 *
 * @since 0.1.0
 */
export const loadDocument = <S>(
  projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
  key: string
): Effect.Effect<Option.Option<S>, EventStoreError, Session> =>
  Fiber.withService(Session, (session) => session.loadDocument(projection, key))

/**
 * Writes everything pending in one transaction; on failure nothing is written.
 * Inside a caller's `SqlClient.withTransaction` it joins that transaction.
 *
 * @since 0.1.0
 */
export const saveChanges: Effect.Effect<SaveResult, SaveError, Session> = Fiber.withService(
  Session,
  (session) => session.saveChanges
)
