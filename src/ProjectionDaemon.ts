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
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventStoreError } from "./Errors.js"
import { EventStore } from "./internal/store.js"
import type * as Projection from "./Projection.js"
import * as Envelope from "./internal/envelope.js"
import * as Projecting from "./internal/projecting.js"
import * as Storage from "./Storage.js"

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
  readonly name: string
  readonly version: number
  /** Sequence of the last event the projection has processed (0: none). */
  readonly checkpoint: number
  /** Sequence of the last event in the log. */
  readonly head: number
  /** Committed events the projection has not processed yet. */
  readonly lag: number
  /** Whether this daemon is the one running the projection right now. */
  readonly leader: boolean
  /** The last failure of this daemon's worker, if it is retrying. */
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

const refOf = (projection: Projection.Projection): Storage.ProjectionRef => ({
  name: projection.name,
  version: projection.version
})
const keyOf = (ref: Storage.ProjectionRef) => `${ref.name}@${ref.version}`

/** Events processed by the daemon, per projection. */
const processedCounter = Metric.counter("chronicle_projection_events_processed", { incremental: true })
/** Sequence of each projection's checkpoint. */
const checkpointGauge = Metric.gauge("chronicle_projection_checkpoint")
/** Events each projection has yet to process, as of the last status. */
const lagGauge = Metric.gauge("chronicle_projection_lag")
/** Failures of each projection's worker (each one is retried). */
const failuresCounter = Metric.counter("chronicle_projection_failures", { incremental: true })

/**
 * The daemon's metrics, tagged with `projection` (name) and `version`:
 * events processed and worker failures (counters), checkpoint sequence and lag
 * (gauges, the lag as of the last `status`).
 *
 * @since 0.1.0
 */
export const metrics = {
  processed: processedCounter,
  checkpoint: checkpointGauge,
  lag: lagGauge,
  failures: failuresCounter
} as const

const failure = (message: string) => new EventStoreError({ message })

/**
 * Computes the document writes of one batch. Snapshots apply each stream's
 * events strictly in version order, exactly once: versions already in the
 * document are skipped, and when the batch misses versions of a stream
 * (transaction-id order is not version order: a transaction that took its id
 * early can write a later version than one with a higher id) the stream's
 * versions up to the batch's last are read from the stream, where committed
 * versions are final.
 *
 * @internal
 */
export const applyBatch = (
  storage: Storage.Storage,
  worker: Pick<Storage.ProjectionWorker, "readDocuments">,
  projection: Projection.Projection,
  batch: ReadonlyArray<Storage.StoredEvent & { readonly streamType?: string }>
): Effect.Effect<ReadonlyArray<Storage.DocumentWrite>, EventStoreError> =>
  projection._tag === "Snapshot"
    ? applySnapshot(storage, worker, projection, batch)
    : applyMultiStream(worker, projection, batch)

const tenantKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`

const applySnapshot = (
  storage: Storage.Storage,
  worker: Pick<Storage.ProjectionWorker, "readDocuments">,
  projection: Projection.Snapshot,
  batch: ReadonlyArray<Storage.StoredEvent & { readonly streamType?: string }>
) =>
  Effect.gen(function*() {
    const aggregate = projection.aggregate
    // A stream's identity is (tenant, id): each tenant's events go into that tenant's snapshot.
    const byStream = new Map<string, Array<Storage.StoredEvent>>()
    for (const event of batch) {
      if (event.streamType !== aggregate.name) continue
      const key = tenantKey(event.tenantId, event.streamId)
      let list = byStream.get(key)
      if (list === undefined) byStream.set(key, list = [])
      list.push(event)
    }
    if (byStream.size === 0) return []
    const docs = yield* worker.readDocuments(
      Array.from(byStream.values(), ([{ streamId, tenantId }]) => ({
        projection: projection.name,
        projectionVersion: projection.version,
        tenantId,
        id: streamId
      }))
    )
    const current = new Map(docs.map((d) => [tenantKey(d.tenantId, d.id), d]))
    const writes: Array<Storage.DocumentWrite> = []
    for (const [key, events] of byStream) {
      const { streamId, tenantId } = events[0]
      const doc = current.get(key)
      let version = doc?.streamVersion ?? 0
      let state: unknown = aggregate.initial
      if (doc !== undefined) state = yield* Projecting.snapshotState(aggregate, doc)
      events.sort((a, b) => a.version - b.version)
      const fresh = events.filter((e) => e.version > version)
      if (fresh.length === 0) continue
      // Committing a version needs the stream row, which its previous version's
      // writer holds until it commits: so when the batch skips versions, before
      // its first or between two (a transaction with a lower id wrote a later
      // version), every version up to its last is committed, and final.
      const last = fresh[fresh.length - 1].version
      const ordered = last - version === fresh.length
        ? fresh
        : yield* storage.readStream(tenantId, streamId, { fromVersion: version + 1, toVersion: last })
      for (const stored of ordered) {
        if (stored.version !== version + 1) {
          return yield* failure(`Projection ${projection.name}: stream "${streamId}" misses version ${version + 1}`)
        }
        const envelope = Envelope.decodeStored(aggregate, stored)
        if (Either.isLeft(envelope)) {
          return yield* failure(`Projection ${projection.name}: ${envelope.left.message} (stream "${streamId}", version ${stored.version}, type ${stored.type})`)
        }
        state = aggregate.evolve(state, envelope.right.data, envelope.right)
        version = stored.version
      }
      writes.push(yield* Projecting.snapshotWrite(projection, aggregate, { tenantId, id: streamId }, Option.some(state), version))
    }
    return writes
  })

// Documents are per tenant: key k of tenant a and key k of tenant b are two documents.
const applyMultiStream = (
  worker: Pick<Storage.ProjectionWorker, "readDocuments">,
  view: Projection.MultiStream,
  batch: ReadonlyArray<Storage.StoredEvent>
) =>
  Effect.gen(function*() {
    const keyed = yield* Projecting.keyedFor([view], batch)
    if (keyed.length === 0) return []
    const docs = yield* worker.readDocuments(Projecting.refsOf(keyed))
    return yield* Projecting.foldViews(keyed, Projecting.byKey(docs))
  })

/**
 * Starts the daemon in the current scope: a worker per Async projection,
 * stopped (after its last complete batch) when the scope closes.
 *
 * @since 0.1.0
 */
export const make = (options?: Options): Effect.Effect<ProjectionDaemonShape, never, EventStore | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* EventStore
    const storage = store.storage
    const ps = storage.projections
    const scope = yield* Effect.scope
    const batchSize = options?.batchSize ?? 500
    const pollInterval = Duration.decode(options?.pollInterval ?? "1 second")
    const projections = store.projections.async
    const leaders = new Set<string>()
    const errors = new Map<string, string>()
    const wakeups = new Map<string, Queue.Queue<void>>()
    const workers = new Map<string, Fiber.RuntimeFiber<never, never>>()

    for (const p of projections) wakeups.set(keyOf(refOf(p)), yield* Queue.sliding<void>(1))
    yield* Effect.forkIn(
      Stream.runForEach(ps.changes, () => Effect.forEach(wakeups.values(), (q) => Queue.offer(q, undefined), { discard: true })),
      scope
    )

    const tags = (ref: Storage.ProjectionRef) => Metric.tagged(Metric.tagged(checkpointGauge, "projection", ref.name), "version", String(ref.version))

    // One batch: read, apply, store documents and checkpoint together.
    const step = (projection: Projection.Projection, worker: Storage.ProjectionWorker, progress: Storage.Progress) =>
      Effect.gen(function*() {
        const batch = yield* worker.readAfter(progress.checkpoint, batchSize)
        if (batch.length === 0) return Option.none<Storage.Progress>()
        const writes = yield* applyBatch(storage, worker, projection, batch)
        const last = batch[batch.length - 1]
        const next: Storage.Progress = {
          checkpoint: { txId: last.txId, sequence: last.sequence },
          processed: progress.processed + batch.length
        }
        yield* worker.store(writes, next)
        const ref = refOf(projection)
        yield* Metric.set(tags(ref), last.sequence)
        yield* Metric.incrementBy(
          Metric.tagged(Metric.tagged(processedCounter, "projection", ref.name), "version", String(ref.version)),
          batch.length
        )
        return Option.some(next)
      })

    const run = (projection: Projection.Projection): Effect.Effect<never> => {
      const ref = refOf(projection)
      const key = keyOf(ref)
      const wake = wakeups.get(key)!
      const lead = Effect.scoped(Effect.gen(function*() {
        const worker = yield* ps.claim(ref)
        leaders.add(key)
        yield* Effect.addFinalizer(() => Effect.sync(() => leaders.delete(key)))
        let progress = yield* worker.progress
        while (true) {
          const next = yield* step(projection, worker, progress)
          errors.delete(key)
          if (Option.isSome(next)) progress = next.value
          else yield* Effect.timeout(Queue.take(wake), pollInterval).pipe(Effect.ignore)
        }
      }))
      const failed = Metric.increment(
        Metric.tagged(Metric.tagged(failuresCounter, "projection", ref.name), "version", String(ref.version))
      )
      // A failing worker gives up leadership and tries again, backing off; it never stops by itself.
      return lead.pipe(
        Effect.tapError((error) =>
          Effect.zipRight(
            Effect.sync(() => errors.set(key, error.message)),
            Effect.zipRight(failed, Effect.logWarning(`Projection ${key} failed; retrying`, error))
          )
        ),
        Effect.catchAllDefect((defect) =>
          Effect.zipRight(
            Effect.sync(() => errors.set(key, String(defect))),
            Effect.zipRight(failed, Effect.fail(failure(`Projection ${key} died: ${String(defect)}`)))
          )
        ),
        Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))),
        Effect.orDie
      ) as Effect.Effect<never>
    }

    // Interruptible even when started from a finalizer (after a rebuild), which
    // would otherwise hand the worker its uninterruptible mode.
    const start = (projection: Projection.Projection) =>
      Effect.tap(
        Effect.forkIn(Effect.interruptible(run(projection)), scope),
        (fiber) => Effect.sync(() => workers.set(keyOf(refOf(projection)), fiber))
      )
    yield* Effect.forEach(projections, start, { discard: true })

    const status: Effect.Effect<ReadonlyArray<Status>, EventStoreError> = Effect.gen(function*() {
      const head = yield* ps.head
      return yield* Effect.forEach(projections, (projection) =>
        Effect.gen(function*() {
          const ref = refOf(projection)
          const progress = yield* ps.progress(ref)
          const lag = yield* ps.countAfter(progress.checkpoint)
          yield* Metric.set(Metric.tagged(Metric.tagged(lagGauge, "projection", ref.name), "version", String(ref.version)), lag)
          return {
            name: ref.name,
            version: ref.version,
            checkpoint: progress.checkpoint.sequence,
            head: head.sequence,
            lag,
            leader: leaders.has(keyOf(ref)),
            error: errors.get(keyOf(ref))
          }
        }))
    })

    const waitForNonStale: ProjectionDaemonShape["waitForNonStale"] = (waitOptions) =>
      Effect.gen(function*() {
        // Everything committed before the call is at or before the head now.
        const target = (yield* ps.head).checkpoint
        const refs = projections.map(refOf)
        const behind = Effect.map(
          Effect.forEach(refs, (ref) => ps.progress(ref)),
          (all) => all.some((p) => Storage.isAfter(target, p.checkpoint))
        )
        yield* behind.pipe(Effect.repeat({ while: (b) => b, schedule: Schedule.spaced("10 millis") }))
      }).pipe(Effect.timeout(waitOptions?.timeout ?? "30 seconds"))

    const rebuild = (projection: Projection.Projection): Stream.Stream<RebuildProgress, EventStoreError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const ref = refOf(projection)
        const key = keyOf(ref)
        // Our own worker steps aside for the rebuild and comes back after it.
        const running = workers.get(key)
        if (running !== undefined) {
          yield* Fiber.interrupt(running)
          workers.delete(key)
          yield* Effect.addFinalizer(() => start(projection))
        }
        const worker = yield* ps.claim(ref)
        yield* worker.reset
        const total = yield* ps.countAfter(Storage.origin)
        // One element before the first batch (a bar at 0), then one per stored batch.
        return Stream.concat(
          Stream.succeed<RebuildProgress>({ processed: 0, total }),
          Stream.unfoldEffect<Storage.Progress, RebuildProgress, EventStoreError, never>(
            { checkpoint: Storage.origin, processed: 0 },
            (progress) =>
              Effect.map(step(projection, worker, progress), (next) =>
                Option.map(next, (next) => [{ processed: next.processed, total: Math.max(total, next.processed) }, next] as const))
          )
        )
      }))

    return { waitForNonStale, status, rebuild } satisfies ProjectionDaemonShape
  })

/**
 * The daemon as a layer: started with the layer, stopped when its scope closes.
 * Works on either store.
 *
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<ProjectionDaemon, never, EventStore> =>
  Layer.scoped(ProjectionDaemon, make(options))

/**
 * Succeeds once every Async projection has processed everything committed
 * before the call; fails with `TimeoutException` after `timeout` (default 30 s).
 *
 * @since 0.1.0
 */
export const waitForNonStale = (
  options?: { readonly timeout?: Duration.DurationInput | undefined }
): Effect.Effect<void, Cause.TimeoutException | EventStoreError, ProjectionDaemon> =>
  Effect.flatMap(ProjectionDaemon, (daemon) => daemon.waitForNonStale(options))

/**
 * Per Async projection: checkpoint, head of the log, lag (also as metrics).
 *
 * @since 0.1.0
 */
export const status: Effect.Effect<ReadonlyArray<Status>, EventStoreError, ProjectionDaemon> = Effect.flatMap(
  ProjectionDaemon,
  (daemon) => daemon.status
)

/**
 * Replays a projection from the start, reporting progress; the documents of
 * its other versions are not touched.
 *
 * @since 0.1.0
 */
export const rebuild = (
  projection: Projection.Projection
): Stream.Stream<RebuildProgress, EventStoreError, ProjectionDaemon> =>
  Stream.unwrap(Effect.map(ProjectionDaemon, (daemon) => daemon.rebuild(projection)))
