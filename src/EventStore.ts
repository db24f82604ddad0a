/**
 * The app-wide event store service that both store layers provide, and the
 * command-handler workflow over it.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import { dual } from "effect/Function"
import type { EventStoreError, InvalidOptionError } from "./Errors.js"
import { type InvalidStreamIdError, InvalidTenantIdError } from "./Errors.js"
import type { EventMetadata } from "./EventEnvelope.js"
import { lockTimeout } from "./internal/input.js"
import * as StateCache from "./internal/stateCache.js"
import * as Command from "./internal/command.js"
import * as ReadAll from "./internal/readAll.js"
import * as StreamList from "./internal/streamList.js"
import * as Tracing from "./internal/tracing.js"
import * as internal from "./internal/store.js"
import * as Projections from "./Projections.js"
import type * as Storage from "./Storage.js"

/**
 * The event store service: storage plus the projection registry. Provided by
 * `EventStorePg.layer` and `EventStoreMemory.layer`.
 *
 * @since 0.1.0
 */
export const EventStore = internal.EventStore

/**
 * @since 0.1.0
 */
export type EventStore = internal.EventStore

/**
 * The service's interface.
 *
 * @since 0.1.0
 */
export type EventStoreShape = internal.EventStoreShape

/**
 * Options every store takes, whatever its storage.
 *
 * @since 0.1.0
 */
export interface MakeOptions {
  /** How long an exclusive fetch waits for a stream's lock by default (5 seconds). */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /** Keep up to this many Live aggregate states between sessions (off by default). */
  readonly liveStateCache?: number | undefined
  /**
   * The clock the store's waits run on: lock time-outs, `retry` back-off of
   * commands, the projection daemon's polling and `waitForNonStale`. Default:
   * the clock of the waiting fiber. `ChronicleTest.layer` sets a live clock
   * here, so a test under `TestClock` never stalls on the store.
   */
  readonly waitClock?: Clock.Clock | undefined
}

/**
 * The event store over a storage (an implementation of the `Storage` port) and
 * the projection registry: both store layers are this over their storage, so
 * a third storage is a port implementation and nothing more.
 *
 * @since 0.1.0
 */
export const make = (
  storage: Storage.Storage,
  options?: MakeOptions
): Effect.Effect<EventStoreShape, InvalidOptionError, Projections.Projections> =>
  Effect.gen(function*() {
    const defaultLockTimeout = yield* lockTimeout("lockTimeout", options?.lockTimeout ?? "5 seconds")
    const projections = yield* Projections.Projections
    return EventStore.of({
      storage,
      projections,
      defaultLockTimeout,
      liveStates: options?.liveStateCache !== undefined && options.liveStateCache > 0
        ? StateCache.make(options.liveStateCache)
        : undefined,
      waitClock: options?.waitClock
    })
  })

/**
 * The tenant events are written with when none is set.
 *
 * @since 0.1.0
 */
export const defaultTenant = internal.defaultTenant

/**
 * The longest tenant id accepted, in UTF-16 code units.
 *
 * @since 0.2.0
 */
export const maxTenantIdLength = 200

/**
 * Returns the reason a tenant id is invalid, or `undefined` when it is valid.
 *
 * @since 0.2.0
 */
export const invalidTenantReason = (tenantId: unknown): string | undefined => {
  if (typeof tenantId !== "string") return `must be a string, got ${tenantId === null ? "null" : typeof tenantId}`
  if (tenantId.length === 0) return "must not be empty"
  if (tenantId.trim().length === 0) return "must not be only white space"
  if (tenantId.length > maxTenantIdLength) return `must be at most ${maxTenantIdLength} characters, got ${tenantId.length}`
  // PostgreSQL text cannot hold NUL nor an unpaired surrogate; rejecting them keeps both stores alike.
  if (tenantId.includes("\u0000")) return "must not contain a NUL character"
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(tenantId)) {
    return "must not contain a lone UTF-16 surrogate"
  }
  return undefined
}

/**
 * Runs an effect in a tenant: every read, fetch, lock, save and document
 * inside it is scoped to that tenant (a stream's identity is the pair
 * (tenant, id)). A bad tenant id fails with `InvalidTenantIdError` before the
 * effect runs, so nothing is written.
 *
 * @since 0.1.0
 */
export const withTenant: {
  (tenantId: string): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | InvalidTenantIdError, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, tenantId: string): Effect.Effect<A, E | InvalidTenantIdError, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, tenantId: string): Effect.Effect<A, E | InvalidTenantIdError, R> =>
  Effect.suspend((): Effect.Effect<A, E | InvalidTenantIdError, R> => {
    const reason = invalidTenantReason(tenantId)
    return reason === undefined
      ? Effect.locally(self, internal.currentTenant, tenantId)
      : Effect.fail(new InvalidTenantIdError({ tenantId, reason }))
  }))

/**
 * Runs an effect with the metadata (correlation, causation, headers) that
 * events appended inside it carry.
 *
 * @since 0.1.0
 */
export const withMetadata: {
  (metadata: EventMetadata): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, metadata: EventMetadata): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, metadata: EventMetadata) => Effect.locally(self, internal.currentMetadata, metadata)
)
/**
 * What `writeToAggregate` returns.
 *
 * @since 0.1.0
 */
export type HandlerResult<S, E> = Command.HandlerResult<S, E>

/**
 * Options of `writeToAggregate`.
 *
 * @since 0.1.0
 */
export type WriteOptions = Command.WriteOptions

/**
 * Fetches a stream for writing, runs `f` on it, and saves, in a session of its
 * own. With `retry`, a `ConcurrencyError` (or `DeadlockError`) re-runs the
 * whole workflow.
 *
 * @since 0.1.0
 */
export const writeToAggregate = Command.writeToAggregate

/**
 * A place in the global log, between two events: opaque, totally ordered,
 * JSON-serialisable (a string). Store an event's `position` to resume after it.
 *
 * @since 0.2.0
 */
export type Position = ReadAll.Position

/**
 * An event of the global log, with its position.
 *
 * @since 0.2.0
 */
export type LoggedEnvelope = ReadAll.LoggedEnvelope

/**
 * Options of `readAll`.
 *
 * @since 0.2.0
 */
export type ReadAllOptions = ReadAll.Options

/**
 * The global log as a Stream, in commit order and gap-safe: an event is
 * emitted only once no transaction that could commit before it is still
 * running. From just after `after` (or the start), the current tenant's events
 * (every tenant's with `allTenants`), filtered by event and stream types; it
 * ends at the head, or with `live` waits for new commits. It reads in batches
 * as the consumer pulls, in constant memory over any length of log. A bad
 * option fails the stream with `InvalidOptionError` naming it.
 *
 * @since 0.2.0
 */
export const readAll: (
  options?: ReadAllOptions
) => Stream.Stream<LoggedEnvelope, EventStoreError | InvalidOptionError, EventStore> = ReadAll.readAll

/**
 * The store's metrics: `chronicle_events_appended` (counter, tagged by
 * `aggregate`), `chronicle_saves` (counter, tagged by `outcome`: ok, conflict,
 * locked, deadlock, error), `chronicle_command_retries` (counter), and the
 * histograms `chronicle_save_duration` and `chronicle_fetch_duration` (in
 * milliseconds, tagged by `aggregate` and `outcome`; fetches are
 * fetchForWriting, fetchForExclusiveWriting and fetchLatest; a lock
 * time-out is a fetch with outcome `locked`, and is counted in
 * `chronicle_saves` as `locked`). They are Effect
 * metrics: an exporter such as `@effect/opentelemetry`'s reads them.
 *
 * @since 0.2.0
 */
export const metrics = {
  eventsAppended: Tracing.eventsAppended,
  saves: Tracing.saves,
  commandRetries: Tracing.commandRetries,
  saveDuration: Tracing.saveDuration,
  fetchDuration: Tracing.fetchDuration
} as const

/**
 * Options of `listStreams`.
 *
 * @since 0.2.0
 */
export type ListStreamsOptions = StreamList.Options

/**
 * A page of `listStreams`.
 *
 * @since 0.2.0
 */
export type StreamsPage = StreamList.Page

/**
 * The current tenant's streams that have events, newest first (by the global
 * sequence of their first event), one page: `limit` streams (default 20) of
 * `page` (from 1), or those older than the stream `after` (a keyset cursor),
 * optionally of one `streamType`. A bad option (or an `after` naming no stream
 * of the tenant) fails with `InvalidOptionError` naming it.
 *
 * @since 0.2.0
 */
export const listStreams: (
  options?: ListStreamsOptions
) => Effect.Effect<StreamsPage, EventStoreError | InvalidOptionError | InvalidStreamIdError, EventStore> =
  StreamList.listStreams
