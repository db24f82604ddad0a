/**
 * The in-memory storage: the same semantics as PostgreSQL (versions, conflicts
 * reported with the actual version, gap-free sequences, stream locks that block
 * other writers and time out) built on Effect's own primitives.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { EventStoreError } from "../Errors.js"
import * as Storage from "../Storage.js"
import * as Locks from "./locks.js"

interface StreamRow {
  readonly aggregateType: string
  version: number
  readonly events: Array<LoggedEvent>
}

/** A stored event with what the projection daemon orders and filters by. */
interface LoggedEvent extends Storage.StoredEvent {
  readonly streamType: string
  /** The commit that wrote it: commits are atomic here, so commit order is visibility order. */
  readonly commit: number
}

/**
 * Creates an empty in-memory store.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Storage.Storage> = Effect.sync(() => {
  // Keyed by (tenant, id): a stream's identity, as the PostgreSQL primary key.
  const streams = new Map<string, StreamRow>()
  const streamKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`
  const log: Array<LoggedEvent> = []
  let commits = 0
  // Wakes projection daemons waiting for new events.
  const listeners = new Set<() => void>()
  const notify = () => listeners.forEach((listener) => listener())
  // One lock per stream, keyed by streamKey (one tenant's lock never blocks
  // another's), stands in for PostgreSQL's row lock on the stream.
  const locks = Locks.make()

  // Reads yield to other fibers, as real I/O would, so that concurrent
  // commands interleave between fetch and save here as they do on a server.
  const readStream = (tenantId: string, id: string, options?: Storage.ReadOptions) =>
    Effect.zipLeft(Effect.sync((): ReadonlyArray<Storage.StoredEvent> => {
      const row = streams.get(streamKey(tenantId, id))
      if (row === undefined) return []
      const from = options?.fromVersion ?? 1
      const to = options?.toVersion ?? Number.POSITIVE_INFINITY
      const until = options?.toTimestamp?.getTime() ?? Number.POSITIVE_INFINITY
      return row.events.filter((e) => e.version >= from && e.version <= to && e.timestamp.getTime() <= until)
    }), Effect.yieldNow())

  const documents = new Map<string, Storage.StoredDocument>()
  const docKey = (ref: Storage.DocumentRef) =>
    `${ref.projection}\u0000${ref.projectionVersion}\u0000${ref.tenantId}\u0000${ref.id}`
  const readDocuments = (refs: ReadonlyArray<Storage.DocumentRef>) =>
    Effect.sync(() => refs.flatMap((ref) => {
      const doc = documents.get(docKey(ref))
      return doc === undefined ? [] : [structuredClone(doc)]
    }))

  const loadSnapshot = (tenantId: string, id: string, projection: string, projectionVersions: ReadonlyArray<number>) =>
    Effect.zipLeft(Effect.sync((): Storage.SnapshotLoad => {
      const snapshot = [...projectionVersions].sort((a, b) => b - a)
        .map((projectionVersion) => documents.get(docKey({ projection, projectionVersion, tenantId, id })))
        .find((doc) => doc !== undefined)
      const after = snapshot?.streamVersion ?? 0
      const events = streams.get(streamKey(tenantId, id))?.events ?? []
      return {
        snapshot: snapshot === undefined ? undefined : structuredClone(snapshot),
        tail: events.filter((e) => e.version > after)
      }
    }), Effect.yieldNow())

  // Checks, computes and applies a batch in one synchronous step: nothing can
  // interleave, so either every stream passes and everything is written, or
  // nothing is.
  const apply = (batch: Storage.CommitBatch, now: number): Either.Either<Storage.CommitResult, EventStoreError> => {
    const conflicts: Array<Storage.Conflict> = []
    for (const write of batch.streams) {
      const actual = streams.get(streamKey(batch.tenantId, write.streamId))?.version ?? 0
      if (write.expected !== "any" && write.expected !== actual) {
        conflicts.push({ streamId: write.streamId, expected: write.expected, actual })
      }
    }
    if (conflicts.length > 0) return Either.right({ _tag: "Conflicted", conflicts })
    const timestamp = new Date(now)
    let sequence = log.length
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
    const commit = ++commits
    batch.streams.forEach((write, s) => {
      if (write.events.length === 0) return
      let row = streams.get(streamKey(batch.tenantId, write.streamId))
      if (row === undefined) {
        row = { aggregateType: write.aggregateType, version: 0, events: [] }
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
    for (const write of [...(batch.documents ?? []), ...(outcome?.writes ?? [])]) {
      documents.set(docKey(write), structuredClone(write))
    }
    if (committed.some((c) => c.events.length > 0)) notify()
    return Either.right({ _tag: "Committed", streams: committed, states: outcome?.states })
  }

  // Waits for the locks of the streams `who` does not hold yet, in id order
  // (interruptibly: an interrupted save gives up its place and writes nothing),
  // applies the batch, and gives back the locks it took.
  const commitAs = (who: Locks.Owner, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> => {
    const ids = batch.streams.map((s) => streamKey(batch.tenantId, s.streamId)).filter((id) => !who.held.has(id)).sort()
    const taken: Array<string> = []
    const applyNow = Effect.flatMap(Clock.currentTimeMillis, (now) => apply(batch, now))
    const lockAll = Effect.forEach(ids, (id) => Effect.zipRight(locks.acquire(id, who), Effect.sync(() => void taken.push(id))), { discard: true })
    return Effect.ensuring(
      Effect.matchEffect(lockAll, {
        onFailure: () => Effect.succeed<Storage.CommitResult>({ _tag: "Deadlocked", streamIds: batch.streams.map((s) => s.streamId) }),
        onSuccess: () => applyNow
      }),
      Effect.sync(() => {
        for (const id of ids) if (who.held.has(id)) locks.release(id, who)
      })
    )
  }

  const begin: Effect.Effect<Storage.Transaction, never, Scope.Scope> = Effect.gen(function*() {
    const who = Locks.owner()
    const releaseAll = Effect.sync(() => locks.releaseAll(who))
    yield* Effect.addFinalizer(() => releaseAll)
    return {
      readStream,
      loadSnapshot,
      readDocuments,
      lock: (id: string, _type: string, tenant: string, timeout: Duration.Duration) => locks.lock(streamKey(tenant, id), who, timeout),
      commit: (batch) => Effect.ensuring(commitAs(who, batch), releaseAll)
    }
  })

  // Projection progress and leadership. Commits are atomic here, so every
  // stored event is visible and the log's order is commit order.
  const progress = new Map<string, Storage.Progress>()
  const leaders = new Map<string, Effect.Semaphore>()
  const refKey = (ref: Storage.ProjectionRef) => `${ref.name}\u0000${ref.version}`
  const positionOf = (event: LoggedEvent): Storage.Checkpoint => ({ txId: BigInt(event.commit), sequence: event.sequence })
  const progressOf = (ref: Storage.ProjectionRef) =>
    Effect.sync(() => progress.get(refKey(ref)) ?? { checkpoint: Storage.origin, processed: 0 })
  // The log is in (commit, sequence) order and sequences are 1..n, so a position is an index.
  const indexAfter = (after: Storage.Checkpoint) => Math.min(after.sequence, log.length)

  const projections: Storage.ProjectionStorage = {
    claim: (ref) =>
      Effect.gen(function*() {
        const key = refKey(ref)
        let leader = leaders.get(key)
        if (leader === undefined) leaders.set(key, leader = Effect.unsafeMakeSemaphore(1))
        const lock = leader
        yield* Effect.acquireRelease(lock.take(1), () => lock.release(1)).pipe(Effect.interruptible)
        return {
          readAfter: (after, limit) =>
            Effect.sync(() => log.slice(indexAfter(after), indexAfter(after) + limit).map((e) => ({ ...e, txId: BigInt(e.commit) }))),
          readDocuments,
          progress: progressOf(ref),
          store: (writes, next) =>
            Effect.sync(() => {
              for (const write of writes) documents.set(docKey(write), structuredClone(write))
              progress.set(key, next)
            }),
          reset: Effect.sync(() => {
            for (const k of Array.from(documents.keys())) {
              const doc = documents.get(k)!
              if (doc.projection === ref.name && doc.projectionVersion === ref.version) documents.delete(k)
            }
            progress.delete(key)
          })
        } satisfies Storage.ProjectionWorker
      }),
    progress: progressOf,
    head: Effect.sync(() => {
      const last = log[log.length - 1]
      return last === undefined ? { checkpoint: Storage.origin, sequence: 0 } : { checkpoint: positionOf(last), sequence: last.sequence }
    }),
    countAfter: (after) => Effect.sync(() => log.length - indexAfter(after)),
    changes: Stream.async<void>((emit) => {
      const listener = () => void emit.single(undefined)
      listeners.add(listener)
      return Effect.sync(() => listeners.delete(listener))
    })
  }

  // The in-memory store has no transactions a caller could open.
  return { readStream, loadSnapshot, readDocuments, commit: (batch) => commitAs(Locks.owner(), batch), begin, joined: Effect.succeed(false), projections }
})
