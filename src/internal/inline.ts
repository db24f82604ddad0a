/**
 * Inline projections of a save: Inline snapshots whose new state is known
 * before the insert go into the same statement as the events; the rest (and
 * multi-stream views) become `Storage.InlineWork`, run by the storage after
 * the insert in the same transaction.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import type { EventStoreError } from "../Errors.js"
import type { EventEnvelope, EventMetadata } from "../EventEnvelope.js"
import type * as Projections from "../Projections.js"
import type * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"
import * as Projecting from "./projecting.js"

/** @internal one stream's pending appends, as a save hands them over. */
export interface Entry {
  readonly aggregate: Aggregate.Any
  readonly streamId: string
  readonly expected: Storage.Expected
  readonly events: ReadonlyArray<{ readonly event: unknown; readonly metadata: EventMetadata }>
}

/** @internal what a save writes for its Inline projections. */
export interface Plan {
  readonly documents: ReadonlyArray<Storage.DocumentWrite>
  readonly inline: Storage.InlineWork | undefined
  /** States computed before the insert, by stream id, reused by the identity map. */
  readonly computed: ReadonlyMap<string, Option.Option<unknown>>
}

/**
 * @internal what the session knows of a stream's state at a version:
 * Some(None) for no events yet, None when it does not know.
 */
export type KnownAt = (entry: Entry, version: Storage.Expected) => Option.Option<Option.Option<unknown>>

/** @internal the envelopes of an entry's events at the positions the store gave them. */
export const envelopesOf = (entry: Entry, committed: Storage.CommittedStream, tenantId: string) =>
  committed.events.map((position, i): EventEnvelope<unknown> => {
    const { event, metadata } = entry.events[i]
    return Envelope.make({ ...position, streamId: entry.streamId, type: Envelope.tagOf(event), tenantId }, event, metadata)
  })

// Aggregates whose evolve reads an envelope's sequence or timestamp: their
// Inline snapshots are computed once the store has given the events those.
const readsPositions = new WeakSet<object>()

// Folds pending events with envelopes whose sequence and timestamp are not
// known yet; returns undefined if evolve looked at either.
const probeFold = (
  entry: Entry,
  from: Option.Option<unknown>,
  write: Storage.StreamWrite,
  tenantId: string
): Option.Option<unknown> | undefined => {
  let touched = false
  const touch = () => {
    touched = true
  }
  const base = entry.expected as number
  const envelopes = entry.events.map(({ event, metadata }, i) => {
    const { sequence: _s, timestamp: _t, ...rest } = Envelope.make(
      { streamId: entry.streamId, version: base + i + 1, sequence: 0, type: write.events[i].type, timestamp: new Date(0), tenantId },
      event,
      metadata
    )
    return Object.defineProperties(rest, {
      sequence: { enumerable: true, get: () => (touch(), 0) },
      timestamp: { enumerable: true, get: () => (touch(), new Date(0)) }
    }) as EventEnvelope<unknown>
  })
  const state = Aggregate.foldFrom(entry.aggregate, from, envelopes)
  return touched ? undefined : state
}

interface Slow {
  readonly entry: Entry
  readonly baseline: Option.Option<Option.Option<unknown>>
}

/** @internal the Inline projection work of a save of `entries` as `batch`. */
export const plan = (
  registry: Projections.Registry,
  entries: ReadonlyArray<Entry>,
  batch: Storage.CommitBatch,
  knownAt: KnownAt
): Either.Either<Plan, EventStoreError> => {
  const computed = new Map<string, Option.Option<unknown>>()
  const documents: Array<Storage.DocumentWrite> = []
  const slow: Array<Slow> = []
  for (let s = 0; s < entries.length; s++) {
    const entry = entries[s]
    const snapshots = registry.inlineSnapshotsOf(entry.aggregate)
    if (snapshots.length === 0 || entry.events.length === 0 || entry.aggregate.state === undefined) continue
    const baseline = knownAt(entry, entry.expected)
    if (Option.isSome(baseline) && !readsPositions.has(entry.aggregate)) {
      const probed = probeFold(entry, baseline.value, batch.streams[s], batch.tenantId)
      if (probed !== undefined) {
        computed.set(entry.streamId, probed)
        const version = (entry.expected as number) + entry.events.length
        for (const p of snapshots) {
          const write = Projecting.snapshotWrite(p, entry.aggregate, { tenantId: batch.tenantId, id: entry.streamId }, probed, version)
          if (Either.isLeft(write)) return Either.left(write.left)
          documents.push(write.right)
        }
        continue
      }
      readsPositions.add(entry.aggregate)
    }
    slow.push({ entry, baseline })
  }
  const views = registry.inlineMultiStream.filter((view) =>
    batch.streams.some((w) => w.events.some((e) => view.codec.tags === undefined || view.codec.tags.has(e.type)))
  )
  if (slow.length === 0 && views.length === 0) return Either.right({ documents, inline: undefined, computed })
  return Either.right({ documents, inline: { prepare: (committed) => prepare(registry, slow, views, batch, committed) }, computed })
}

// With the positions known: the documents to read, and how to compute the writes from them.
const prepare = (
  registry: Projections.Registry,
  slow: ReadonlyArray<Slow>,
  views: ReadonlyArray<import("../Projection.js").MultiStream>,
  batch: Storage.CommitBatch,
  committed: ReadonlyArray<Storage.CommittedStream>
): Either.Either<Storage.InlineStep, EventStoreError> => {
  const streams = new Map(committed.map((c) => [c.streamId, c]))
  const refs: Array<Storage.DocumentRef> = []
  for (const { baseline, entry } of slow) {
    if (Option.isSome(baseline)) continue
    for (const p of registry.inlineSnapshotsOf(entry.aggregate)) {
      refs.push({ projection: p.name, projectionVersion: p.version, tenantId: batch.tenantId, id: entry.streamId })
    }
  }
  const stored: Array<Storage.StoredEvent> = []
  for (const write of batch.streams) {
    const c = streams.get(write.streamId)
    if (c === undefined) continue
    write.events.forEach((event, i) => {
      stored.push({ ...c.events[i], streamId: write.streamId, type: event.type, data: event.data, metadata: event.metadata, tenantId: batch.tenantId })
    })
  }
  const keyed = Projecting.keyedFor(views, stored)
  if (Either.isLeft(keyed)) return Either.left(keyed.left)
  keyed.right.sort((a, b) => a.envelope.sequence - b.envelope.sequence)
  refs.push(...Projecting.refsOf(keyed.right))
  return Either.right({
    documents: refs,
    compute: (existing) => {
      const docs = Projecting.byKey(existing)
      const states = new Map<string, Option.Option<unknown>>()
      const writes: Array<Storage.DocumentWrite> = []
      for (const { baseline, entry } of slow) {
        const c = streams.get(entry.streamId)!
        const envelopes = envelopesOf(entry, c, batch.tenantId)
        for (const p of registry.inlineSnapshotsOf(entry.aggregate)) {
          let from = baseline
          if (Option.isNone(from)) {
            const ref = { projection: p.name, projectionVersion: p.version, tenantId: batch.tenantId, id: entry.streamId }
            const doc = docs.get(Projecting.documentKey(ref))
            if (c.previousVersion === 0) from = Option.some(Option.none())
            else if (doc !== undefined && doc.streamVersion === c.previousVersion) {
              const decoded = Projecting.snapshotState(entry.aggregate, doc)
              if (Either.isRight(decoded)) from = Option.some(Option.some(decoded.right))
            }
          }
          // A snapshot behind the stream stays behind: fetches fold the events after it.
          if (Option.isNone(from)) continue
          const state = Aggregate.foldFrom(entry.aggregate, from.value, envelopes)
          states.set(entry.streamId, state)
          const write = Projecting.snapshotWrite(p, entry.aggregate, { tenantId: batch.tenantId, id: entry.streamId }, state, c.version)
          if (Either.isLeft(write)) return Either.left(write.left)
          writes.push(write.right)
        }
      }
      const viewWrites = Projecting.foldViews(keyed.right, docs)
      if (Either.isLeft(viewWrites)) return Either.left(viewWrites.left)
      return Either.right({ writes: [...writes, ...viewWrites.right], states })
    }
  })
}
