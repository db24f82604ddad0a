/**
 * The daemon's run loop: a worker per Async projection that waits for the
 * projection's leadership, applies batches while the log has events after its
 * checkpoint, waits for a commit's wake-up (or the poll interval) when it has
 * none, and on failure gives up leadership and tries again. Batches are
 * `daemonBatch`'s; status, waits and rebuilds are `daemonQueries`'.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventStoreError } from "../Errors.js"
import type * as Projection from "../Projection.js"
import type { Options, ProjectionDaemonShape } from "../ProjectionDaemon.js"
import * as Batch from "./daemonBatch.js"
import * as Metrics from "./daemonMetrics.js"
import * as Queries from "./daemonQueries.js"
import { EventStore, type EventStoreShape, onWaitClock } from "./store.js"
import * as Subscriber from "./subscriber.js"
import * as Subscription from "../Subscription.js"

const failure = (message: string) => new EventStoreError({ message })

/** This process's workers, by projection key, and what they share. */
interface Workers extends Batch.Batching {
  readonly store: EventStoreShape
  readonly pollInterval: Duration.Duration
  /** Where workers run: the daemon's scope. */
  readonly scope: Scope.Scope
  readonly leaders: Set<string>
  readonly errors: Map<string, string>
  readonly wakeups: Map<string, Queue.Queue<void>>
  readonly fibers: Map<string, Fiber.RuntimeFiber<never, never>>
}

// A failing worker gives up leadership and tries again, backing off; it never stops by itself.
const supervise = (
  workers: Workers,
  key: string,
  label: string,
  failed: Effect.Effect<void>,
  lead: Effect.Effect<void, EventStoreError>
): Effect.Effect<never> =>
  lead.pipe(
    Effect.tapError((error) =>
      Effect.zipRight(
        Effect.sync(() => workers.errors.set(key, error.message)),
        Effect.zipRight(failed, Effect.logWarning(`${label} failed; retrying`, error))
      )
    ),
    Effect.catchAllDefect((defect) =>
      Effect.zipRight(
        Effect.sync(() => workers.errors.set(key, String(defect))),
        Effect.zipRight(failed, Effect.fail(failure(`${label} died: ${String(defect)}`)))
      )
    ),
    Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))),
    Effect.orDie,
    Effect.forever
  )

const run = (workers: Workers, projection: Projection.Projection): Effect.Effect<never> => {
  const ref = Batch.refOf(projection)
  const key = Batch.keyOf(ref)
  const wake = workers.wakeups.get(key)!
  const lead = Effect.scoped(Effect.gen(function*() {
    const worker = yield* workers.storage.projections.claim(ref)
    workers.leaders.add(key)
    yield* Effect.addFinalizer(() => Effect.sync(() => workers.leaders.delete(key)))
    let progress = yield* worker.progress
    // Until a rebuild (or another takeover) asks for the leadership: then it is given up, and claimed again after.
    while (!(yield* worker.asked)) {
      const next = yield* Batch.step(workers, projection, worker, progress)
      workers.errors.delete(key)
      if (Option.isSome(next)) progress = next.value
      else yield* Effect.timeout(Queue.take(wake), workers.pollInterval).pipe(Effect.ignore)
    }
  }))
  return supervise(workers, key, `Projection ${key}`, Metric.increment(Metrics.of(Metrics.failures, ref)), lead)
}

const deliver = (workers: Workers, subscription: Subscription.Subscription<any, never>): Effect.Effect<never> => {
  const key = Subscriber.keyOf(subscription.name)
  // Handlers get the EventStore (they may read streams or run commands), provided once for the fiber.
  const lead = Effect.provideService(Subscriber.lead(workers, subscription, workers.wakeups.get(key)!), EventStore, workers.store)
  return supervise(workers, key, `Subscription ${subscription.name}`, Metric.increment(Metrics.of(Metrics.failures, Subscription.refOf(subscription.name))), lead)
}

// Interruptible even when started from a finalizer (after a rebuild), which
// would otherwise hand the worker its uninterruptible mode.
const start = (workers: Workers, projection: Projection.Projection) =>
  Effect.tap(
    // The worker polls and backs off on the store's wait clock, whoever starts it (a rebuild's finalizer too).
    Effect.forkIn(Effect.interruptible(onWaitClock(workers.store, run(workers, projection))), workers.scope),
    (fiber) => Effect.sync(() => workers.fibers.set(Batch.keyOf(Batch.refOf(projection)), fiber))
  )

// What `Local.stepAside` does: interrupt the worker, start it again when the rebuild's scope closes.
const stepAside = (workers: Workers, projection: Projection.Projection): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const key = Batch.keyOf(Batch.refOf(projection))
    const running = workers.fibers.get(key)
    if (running !== undefined) {
      yield* Fiber.interrupt(running)
      workers.fibers.delete(key)
      yield* Effect.addFinalizer(() => start(workers, projection))
    }
  })

/** @internal starts a worker per Async projection in the current scope; the daemon's queries over them. */
export const make = (options?: Options): Effect.Effect<ProjectionDaemonShape, never, EventStore | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* EventStore
    const projections = store.projections.async
    const workers: Workers = {
      store,
      storage: store.storage,
      batchSize: options?.batchSize ?? 500,
      pollInterval: Duration.decode(options?.pollInterval ?? "1 second"),
      scope: yield* Effect.scope,
      leaders: new Set(),
      errors: new Map(),
      wakeups: new Map(),
      fibers: new Map()
    }
    for (const p of projections) workers.wakeups.set(Batch.keyOf(Batch.refOf(p)), yield* Queue.sliding<void>(1))
    const subscriptions = store.projections.subscriptions
    for (const s of subscriptions) workers.wakeups.set(Subscriber.keyOf(s.name), yield* Queue.sliding<void>(1))
    yield* Effect.forkIn(
      Stream.runForEach(
        workers.storage.projections.changes,
        () => Effect.forEach(workers.wakeups.values(), (q) => Queue.offer(q, undefined), { discard: true })
      ),
      workers.scope
    )
    yield* Effect.forEach(projections, (projection) => start(workers, projection), { discard: true })
    // Subscriptions run beside projections, each in its own fiber: a stuck one holds nothing else back.
    yield* Effect.forEach(
      subscriptions,
      (subscription) => Effect.forkIn(Effect.interruptible(onWaitClock(store, deliver(workers, subscription))), workers.scope),
      { discard: true }
    )

    const queries: Queries.Queries = {
      storage: workers.storage,
      batchSize: workers.batchSize,
      projections,
      subscriptions,
      local: { leaders: workers.leaders, errors: workers.errors, stepAside: (projection) => stepAside(workers, projection) }
    }
    return {
      waitForNonStale: (waitOptions) => onWaitClock(store, Queries.waitForNonStale(queries, waitOptions)),
      status: Queries.status(queries),
      rebuild: (projection) => Queries.rebuild(queries, projection)
    } satisfies ProjectionDaemonShape
  })
