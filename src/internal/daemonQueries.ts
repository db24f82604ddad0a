/**
 * What can be asked of the projections in the log: their status, a wait until
 * they have caught up, a rebuild. These read the store and the registry's
 * Async projections; of the workers running in this process they need only
 * what `Local` tells (leadership, last errors, a worker that steps aside).
 *
 * @internal
 */
import type * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { EventStoreError } from "../Errors.js"
import type * as Projection from "../Projection.js"
import type * as ProjectionDaemon from "../ProjectionDaemon.js"
import type * as Projections from "../Projections.js"
import * as Subscription from "../Subscription.js"
import * as Storage from "../Storage.js"
import * as Batch from "./daemonBatch.js"
import * as Metrics from "./daemonMetrics.js"
import * as ReadAll from "./readAll.js"
import * as Subscriber from "./subscriber.js"

/** @internal what this process's workers tell the queries, by projection key. */
export interface Local {
  readonly leaders: ReadonlySet<string>
  readonly errors: ReadonlyMap<string, string>
  /** Stops this process's worker of the projection, if one runs here, and starts it again when the scope closes. */
  readonly stepAside: (projection: Projection.Projection) => Effect.Effect<void, never, Scope.Scope>
}

/** @internal what the queries need. */
export interface Queries extends Batch.Batching {
  /** The registry's Async projections. */
  readonly projections: ReadonlyArray<Projection.Projection>
  readonly subscriptions: ReadonlyArray<Subscription.Subscription<any, never>>
  readonly local: Local
}

/** @internal the queries of a process that runs no daemon: no leaders, no errors, no worker to step aside. */
export const standalone = (storage: Storage.Storage, registry: Projections.Registry): Queries => ({
  storage,
  batchSize: 500,
  projections: registry.async,
  subscriptions: registry.subscriptions,
  local: { leaders: new Set(), errors: new Map(), stepAside: () => Effect.void }
})

const statusOf = (
  queries: Queries,
  head: { readonly sequence: number },
  kind: ProjectionDaemon.Status["kind"],
  ref: Storage.ProjectionRef,
  key: string
): Effect.Effect<ProjectionDaemon.Status, EventStoreError> =>
  Effect.gen(function*() {
    const ps = queries.storage.projections
    const progress = yield* ps.progress(ref)
    const lag = yield* ps.countAfter(progress.checkpoint)
    yield* Metric.set(Metrics.of(Metrics.lag, ref), lag)
    return {
      kind,
      name: ref.name,
      version: ref.version,
      position: ReadAll.positionOf(progress.checkpoint),
      checkpoint: progress.checkpoint.sequence,
      head: head.sequence,
      lag,
      leader: queries.local.leaders.has(key),
      error: queries.local.errors.get(key) ?? progress.error
    }
  })

/** @internal per Async projection and subscription: position, head of the log, lag (also as metrics). */
export const status = (queries: Queries): Effect.Effect<ReadonlyArray<ProjectionDaemon.Status>, EventStoreError> =>
  Effect.gen(function*() {
    const head = yield* queries.storage.projections.head
    const projections = yield* Effect.forEach(queries.projections, (projection) => {
      const ref = Batch.refOf(projection)
      return statusOf(queries, head, "projection", ref, Batch.keyOf(ref))
    })
    const subscriptions = yield* Effect.forEach(queries.subscriptions, (subscription) =>
      statusOf(queries, head, "subscription", Subscription.refOf(subscription.name), Subscriber.keyOf(subscription.name)))
    return [...projections, ...subscriptions]
  })

/** @internal succeeds once every Async projection has processed everything committed before the call. */
export const waitForNonStale = (
  queries: Queries,
  options?: { readonly timeout?: Duration.DurationInput | undefined }
): Effect.Effect<void, Cause.TimeoutException | EventStoreError> =>
  Effect.gen(function*() {
    const ps = queries.storage.projections
    // Everything committed before the call is at or before the head now.
    const target = (yield* ps.head).checkpoint
    const refs = queries.projections.map(Batch.refOf)
    const behind = Effect.map(
      Effect.forEach(refs, (ref) => ps.progress(ref)),
      (all) => all.some((p) => Storage.isAfter(target, p.checkpoint))
    )
    yield* behind.pipe(Effect.repeat({ while: (b) => b, schedule: Schedule.spaced("10 millis") }))
  }).pipe(Effect.timeout(options?.timeout ?? "30 seconds"))

/** @internal replays a projection from the start, holding its leadership, reporting progress. */
export const rebuild = (
  queries: Queries,
  projection: Projection.Projection
): Stream.Stream<ProjectionDaemon.RebuildProgress, EventStoreError> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const ps = queries.storage.projections
    // Our own worker steps aside for the rebuild and comes back after it.
    yield* queries.local.stepAside(projection)
    const worker = yield* ps.takeOver(Batch.refOf(projection))
    yield* worker.reset
    const total = yield* ps.countAfter(Storage.origin)
    // One element before the first batch (a bar at 0), then one per stored batch.
    return Stream.concat(
      Stream.succeed<ProjectionDaemon.RebuildProgress>({ processed: 0, total }),
      Stream.unfoldEffect<Storage.Progress, ProjectionDaemon.RebuildProgress, EventStoreError, never>(
        { checkpoint: Storage.origin, processed: 0 },
        (progress) =>
          Effect.map(Batch.step(queries, projection, worker, progress), (next) =>
            Option.map(next, (next) => [{ processed: next.processed, total: Math.max(total, next.processed) }, next] as const))
      )
    )
  }))
