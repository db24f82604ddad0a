/**
 * One projection's batch from the log: read the events after its checkpoint,
 * fold them into documents, and store the documents and the new checkpoint
 * atomically (an exactly-once effect). The daemon's workers and rebuilds both
 * advance a projection through here; the folds themselves are `projecting`'s.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import { EventStoreError } from "../Errors.js"
import type * as Projection from "../Projection.js"
import type * as Storage from "../Storage.js"
import * as Metrics from "./daemonMetrics.js"
import * as Envelope from "./envelope.js"
import * as Projecting from "./projecting.js"
import * as Tracing from "./tracing.js"

/** @internal the stored identity of a projection: its name and version. */
export const refOf = (projection: Projection.Projection): Storage.ProjectionRef => ({
  name: projection.name,
  version: projection.version
})

/** @internal one key per projection version. */
export const keyOf = (ref: Storage.ProjectionRef) => `${ref.name}@${ref.version}`

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

/** @internal what a batch needs: the store (to read streams) and how many events a batch takes at most. */
export interface Batching {
  readonly storage: Storage.Storage
  readonly batchSize: number
}

/**
 * @internal one batch: read, apply, store documents and checkpoint together;
 * the progress after it, or none when the log had nothing after `progress`.
 */
export const step = (
  batching: Batching,
  projection: Projection.Projection,
  worker: Storage.ProjectionWorker,
  progress: Storage.Progress
): Effect.Effect<Option.Option<Storage.Progress>, EventStoreError> =>
  Effect.flatMap(worker.readAfter(progress.checkpoint, batching.batchSize), (batch) =>
    batch.length === 0
      ? Effect.succeed(Option.none<Storage.Progress>())
      : Tracing.span(apply(batching, projection, worker, progress, batch), "chronicle.projection.batch", {
        "chronicle.projection": projection.name,
        "chronicle.projection_version": projection.version,
        "chronicle.first_sequence": batch[0].sequence,
        "chronicle.last_sequence": batch[batch.length - 1].sequence,
        "chronicle.events": batch.length
      }))

const apply = (
  batching: Batching,
  projection: Projection.Projection,
  worker: Storage.ProjectionWorker,
  progress: Storage.Progress,
  batch: ReadonlyArray<Storage.LoggedEvent>
): Effect.Effect<Option.Option<Storage.Progress>, EventStoreError> =>
  Effect.gen(function*() {
    // Archived streams' events are passed over (as readAll and subscriptions do),
    // but counted and checkpointed: the projection has looked at them.
    const live = batch.some((e) => e.archived === true) ? batch.filter((e) => e.archived !== true) : batch
    const writes = live.length === 0 ? [] : yield* applyBatch(batching.storage, worker, projection, live)
    const last = batch[batch.length - 1]
    const next: Storage.Progress = {
      checkpoint: { txId: last.txId, sequence: last.sequence },
      processed: progress.processed + batch.length
    }
    yield* worker.store(writes, next)
    const ref = refOf(projection)
    yield* Metric.set(Metrics.of(Metrics.checkpoint, ref), last.sequence)
    yield* Metric.incrementBy(Metrics.of(Metrics.processed, ref), batch.length)
    return Option.some(next)
  })
