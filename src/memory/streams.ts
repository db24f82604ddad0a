/**
 * Streams and commits of the in-memory store: reading streams, snapshots and
 * documents, and applying a commit batch in one synchronous step.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { EventStoreError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import { docKey, type LoggedEvent, notify, type State, streamKey } from "./state.js"

// Reads yield to other fibers, as real I/O would, so that concurrent
// commands interleave between fetch and save here as they do on a server.
const readStream = (state: State, tenantId: string, id: string, options?: Storage.ReadOptions) =>
  Effect.zipLeft(Effect.sync((): Storage.StreamEvents => {
    const row = state.streams.get(streamKey(tenantId, id))
    if (row === undefined) return []
    const from = options?.fromVersion ?? 1
    const to = options?.toVersion ?? Number.POSITIVE_INFINITY
    const until = options?.toTimestamp?.getTime() ?? Number.POSITIVE_INFINITY
    const events: Array<Storage.StoredEvent> & { archived?: boolean } = row.events.filter((e) =>
      e.version >= from && e.version <= to && e.timestamp.getTime() <= until
    )
    if (row.archived) events.archived = true
    return events
  }), Effect.yieldNow())

/** @internal stored documents by reference, as copies; missing ones are left out. */
export const readDocuments = (state: State, refs: ReadonlyArray<Storage.DocumentRef>) =>
  Effect.sync(() => refs.flatMap((ref) => {
    const doc = state.documents.get(docKey(ref))
    return doc === undefined ? [] : [structuredClone(doc)]
  }))

const loadSnapshot = (state: State, tenantId: string, id: string, projection: string, projectionVersions: ReadonlyArray<number>) =>
  Effect.zipLeft(Effect.sync((): Storage.SnapshotLoad => {
    const snapshot = [...projectionVersions].sort((a, b) => b - a)
      .map((projectionVersion) => state.documents.get(docKey({ projection, projectionVersion, tenantId, id })))
      .find((doc) => doc !== undefined)
    const after = snapshot?.streamVersion ?? 0
    const row = state.streams.get(streamKey(tenantId, id))
    return {
      snapshot: snapshot === undefined ? undefined : structuredClone(snapshot),
      tail: (row?.events ?? []).filter((e) => e.version > after),
      archived: row?.archived === true
    }
  }), Effect.yieldNow())

/** @internal the reads of the store and of each of its transactions. */
export type Reads = Pick<Storage.Operations, "readStream" | "loadSnapshot" | "readDocuments">

/** @internal the reads of `state`. */
export const reads = (state: State): Reads => ({
  readStream: (tenantId, id, options) => readStream(state, tenantId, id, options),
  loadSnapshot: (tenantId, id, projection, projectionVersions) => loadSnapshot(state, tenantId, id, projection, projectionVersions),
  readDocuments: (refs) => readDocuments(state, refs)
})

/**
 * @internal checks, computes and applies a batch in one synchronous step:
 * nothing can interleave, so either every stream passes and everything is
 * written, or nothing is.
 */
export const apply = (state: State, batch: Storage.CommitBatch, now: number): Either.Either<Storage.CommitResult, EventStoreError> => {
  const { documents, streams } = state
  const conflicts: Array<Storage.Conflict> = []
  for (const write of batch.streams) {
    const row = streams.get(streamKey(batch.tenantId, write.streamId))
    const actual = row?.version ?? 0
    // An archived stream takes nothing, whatever the expectation (as PostgreSQL's conditional update).
    if (row?.archived === true || (write.expected !== "any" && write.expected !== actual)) {
      conflicts.push({ streamId: write.streamId, expected: write.expected === "any" ? -1 : write.expected, actual, archived: row?.archived })
    }
  }
  if (conflicts.length > 0) return Either.right({ _tag: "Conflicted", conflicts })
  const timestamp = new Date(now)
  let sequence = state.log.length
  const committed = batch.streams.map((write): Storage.CommittedStream => {
    const previousVersion = streams.get(streamKey(batch.tenantId, write.streamId))?.version ?? 0
    const events = write.events.map((_, i): Storage.AppendedEvent => ({
      version: previousVersion + i + 1,
      sequence: ++sequence,
      timestamp
    }))
    return { streamId: write.streamId, previousVersion, version: previousVersion + write.events.length, events }
  })
  let outcome: Storage.InlineOutcome | undefined
  if (batch.inline !== undefined) {
    const step = batch.inline.prepare(committed)
    if (Either.isLeft(step)) return Either.left(step.left)
    const existing = step.right.documents.flatMap((ref) => {
      const doc = documents.get(docKey(ref))
      return doc === undefined ? [] : [doc]
    })
    const computed = step.right.compute(existing)
    if (Either.isLeft(computed)) return Either.left(computed.left)
    outcome = computed.right
  }
  append(state, batch, committed, timestamp)
  for (const write of [...(batch.documents ?? []), ...(outcome?.writes ?? [])]) {
    documents.set(docKey(write), structuredClone(write))
  }
  for (const id of batch.archive ?? []) {
    const row = streams.get(streamKey(batch.tenantId, id))
    if (row !== undefined && row.version > 0) row.archived = true
  }
  if (committed.some((c) => c.events.length > 0)) notify(state)
  return Either.right({ _tag: "Committed", streams: committed, states: outcome?.states })
}

// Writes the batch's events at the positions `committed` gave them, as one commit.
const append = (state: State, batch: Storage.CommitBatch, committed: ReadonlyArray<Storage.CommittedStream>, timestamp: Date) => {
  const { log, streams } = state
  const commit = ++state.commits
  batch.streams.forEach((write, s) => {
    if (write.events.length === 0) return
    let row = streams.get(streamKey(batch.tenantId, write.streamId))
    if (row === undefined) {
      row = { aggregateType: write.aggregateType, version: 0, events: [], archived: false }
      streams.set(streamKey(batch.tenantId, write.streamId), row)
    }
    write.events.forEach((event, i) => {
      const position = committed[s].events[i]
      const stored: LoggedEvent = {
        streamId: write.streamId,
        version: position.version,
        sequence: position.sequence,
        type: event.type,
        // A deep copy, as a database would keep, so later mutation of the caller's objects cannot leak in.
        data: structuredClone(event.data),
        metadata: structuredClone(event.metadata),
        timestamp,
        tenantId: batch.tenantId,
        streamType: write.aggregateType,
        commit
      }
      log.push(stored)
      row!.events.push(stored)
    })
    row.version = committed[s].version
  })
}

/** @internal the tenant's streams with events, newest first (by their first event's sequence), paged. */
export const listStreams = (state: State, tenantId: string, query: Storage.StreamQuery) =>
  Effect.sync((): ReadonlyArray<Storage.StreamInfo> => {
    const all: Array<Storage.StreamInfo> = []
    for (const row of state.streams.values()) {
      const first = row.events[0]
      if (first === undefined || first.tenantId !== tenantId) continue
      if (query.streamType !== undefined && row.aggregateType !== query.streamType) continue
      all.push({
        streamId: first.streamId,
        streamType: row.aggregateType,
        version: row.version,
        tenantId,
        sequence: first.sequence,
        createdAt: first.timestamp,
        updatedAt: row.events[row.events.length - 1].timestamp,
        archived: row.archived
      })
    }
    all.sort((a, b) => b.sequence - a.sequence)
    let from = 0
    if (query.after !== undefined) {
      // As in PostgreSQL: a cursor that names no stream of the tenant matches nothing.
      const cursor = state.streams.get(streamKey(tenantId, query.after))?.events[0]
      if (cursor === undefined) return []
      from = all.findIndex((info) => info.sequence < cursor.sequence)
      if (from === -1) return []
    }
    const start = from + Math.max(0, query.offset)
    return all.slice(start, start + Math.max(0, query.limit))
  })
