/**
 * The projection daemon: a scoped background worker that runs every Async
 * projection of the registry, in commit order, gap-safe, one leader per
 * projection across processes, with its checkpoint stored in the same
 * transaction as the projection's documents (an exactly-once effect).
 *
 * @since 0.1.0
 */
import type * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { EventStoreError } from "./Errors.js"
import * as internal from "./internal/daemon.js"
import * as Metrics from "./internal/daemonMetrics.js"
import * as Queries from "./internal/daemonQueries.js"
import { EventStore, onWaitClock } from "./internal/store.js"
import type { Position } from "./internal/readAll.js"
import type * as Projection from "./Projection.js"

/**
 * Options of the daemon.
 *
 * @since 0.1.0
 */
export interface Options {
  /** Events read and stored per transaction (default 500). */
  readonly batchSize?: number | undefined
  /** How often an idle worker looks for new events when no notification came (default 1 second). */
  readonly pollInterval?: Duration.DurationInput | undefined
}

/**
 * One projection's progress.
 *
 * @since 0.1.0
 */
export interface Status {
  /** A projection, or a subscription (whose version is 0). */
  readonly kind: "projection" | "subscription"
  readonly name: string
  readonly version: number
  /** Where it stands in the log (what `Subscription.reset` takes). */
  readonly position: Position
  /** Sequence of the last event the projection has processed (0: none). */
  readonly checkpoint: number
  /** Sequence of the last event in the log. */
  readonly head: number
  /** Committed events the projection has not processed yet. */
  readonly lag: number
  /** Whether this daemon is the one running the projection right now. */
  readonly leader: boolean
  /** The last failure of this daemon's worker, if it is retrying; for a stopped subscription, why it stopped. */
  readonly error: string | undefined
}

/**
 * A rebuild's progress.
 *
 * @since 0.1.0
 */
export interface RebuildProgress {
  readonly processed: number
  readonly total: number
}

/**
 * The daemon's interface.
 *
 * @since 0.1.0
 */
export interface ProjectionDaemonShape {
  readonly waitForNonStale: (
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, Cause.TimeoutException | EventStoreError>
  readonly status: Effect.Effect<ReadonlyArray<Status>, EventStoreError>
  readonly rebuild: (projection: Projection.Projection) => Stream.Stream<RebuildProgress, EventStoreError>
}

/**
 * The projection daemon service.
 *
 * @since 0.1.0
 */
export class ProjectionDaemon extends Context.Tag("effect-chronicle/ProjectionDaemon")<
  ProjectionDaemon,
  ProjectionDaemonShape
>() {}

/**
 * The daemon's metrics, tagged with `projection` (name) and `version`:
 * events processed and worker failures (counters), checkpoint sequence and lag
 * (gauges, the lag as of the last `status`).
 *
 * @since 0.1.0
 */
export const metrics = {
  processed: Metrics.processed,
  checkpoint: Metrics.checkpoint,
  lag: Metrics.lag,
  failures: Metrics.failures
} as const

/**
 * Starts the daemon in the current scope: a worker per Async projection,
 * stopped (after its last complete batch) when the scope closes.
 *
 * @since 0.1.0
 */
export const make = (options?: Options): Effect.Effect<ProjectionDaemonShape, never, EventStore | Scope.Scope> =>
  internal.make(options)

/**
 * The daemon as a layer: started with the layer, stopped when its scope closes.
 * Works on either store.
 *
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<ProjectionDaemon, never, EventStore> =>
  Layer.scoped(ProjectionDaemon, make(options))

// The daemon of this process if there is one (it knows its leaders and errors), else the store alone.
const queries = <A, E>(
  f: (daemon: ProjectionDaemonShape) => Effect.Effect<A, E>
): Effect.Effect<A, E, EventStore> =>
  Effect.flatMap(Effect.serviceOption(ProjectionDaemon), (daemon) =>
    Option.isSome(daemon)
      ? f(daemon.value)
      : Effect.flatMap(EventStore, (store) => f(standalone(store))))

const standalone = (store: EventStore["Type"]): ProjectionDaemonShape => {
  const q = Queries.standalone(store.storage, store.projections)
  return {
    waitForNonStale: (options) => onWaitClock(store, Queries.waitForNonStale(q, options)),
    status: Queries.status(q),
    rebuild: (projection) => Queries.rebuild(q, projection)
  }
}

/**
 * Succeeds once every Async projection has processed everything committed
 * before the call; fails with `TimeoutException` after `timeout` (default 30 s).
 * Needs only the store: the daemon may run in another process.
 *
 * @since 0.1.0
 */
export const waitForNonStale = (
  options?: { readonly timeout?: Duration.DurationInput | undefined }
): Effect.Effect<void, Cause.TimeoutException | EventStoreError, EventStore> =>
  queries((daemon) => daemon.waitForNonStale(options))

/**
 * Per Async projection and per subscription: position, head of the log, lag
 * (also as metrics), leadership here, error. Needs only the store: the daemon may run in another process.
 *
 * @since 0.1.0
 */
export const status: Effect.Effect<ReadonlyArray<Status>, EventStoreError, EventStore> = queries((daemon) => daemon.status)

/**
 * Replays a projection from the start, reporting progress; the documents of
 * its other versions are not touched. It holds the projection's leadership
 * while it runs, so no daemon applies events to it meanwhile. Needs only the
 * store: the daemon may run in another process.
 *
 * @since 0.1.0
 */
export const rebuild = (
  projection: Projection.Projection
): Stream.Stream<RebuildProgress, EventStoreError, EventStore> =>
  Stream.unwrap(queries((daemon) => Effect.succeed(daemon.rebuild(projection))))
