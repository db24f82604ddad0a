/**
 * The projection daemon's view of the in-memory store: the log, projection
 * progress and leadership. Commits are atomic here, so every stored event is
 * visible and the log's order is commit order.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Storage from "../Storage.js"
import { docKey, type LoggedEvent, notify, type State, streamKey } from "./state.js"
import * as Streams from "./streams.js"

/** What the log adds to the store's state: each projection's progress and leadership, by refKey. */
interface Log {
  readonly state: State
  readonly progress: Map<string, Storage.Progress>
  readonly leaders: Map<string, Effect.Semaphore>
  /** Takeovers waiting, by refKey. */
  readonly takeovers: Map<string, number>
  readonly deadLetters: Map<string, Array<Storage.DeadLetter>>
}

const refKey = (ref: Storage.ProjectionRef) => `${ref.name}\u0000${ref.version}`
const positionOf = (event: LoggedEvent): Storage.Checkpoint => ({ txId: BigInt(event.commit), sequence: event.sequence })
const progressOf = (log: Log, ref: Storage.ProjectionRef) =>
  Effect.sync(() => log.progress.get(refKey(ref)) ?? { checkpoint: Storage.origin, processed: 0 })
// The log is in (commit, sequence) order and sequences are 1..n, so a position is an index.
const indexAfter = (log: Log, after: Storage.Checkpoint) => Math.min(after.sequence, log.state.log.length)

const leaderOf = (log: Log, key: string) => {
  let leader = log.leaders.get(key)
  if (leader === undefined) log.leaders.set(key, leader = Effect.unsafeMakeSemaphore(1))
  return leader
}

// A claim gives way to a waiting takeover: had while one waits, it is given back and tried again.
const lead = (log: Log, key: string, giveWay: boolean): Effect.Effect<void, never, Scope.Scope> => {
  const leader = leaderOf(log, key)
  const once = Effect.acquireRelease(leader.take(1), () => leader.release(1)).pipe(Effect.interruptible)
  if (!giveWay) return once
  const attempt: Effect.Effect<void, never, Scope.Scope> = Effect.flatMap(
    Effect.sync(() => (log.takeovers.get(key) ?? 0) > 0),
    (waiting) => waiting ? Effect.zipRight(Effect.sleep("10 millis"), attempt) : once
  )
  return attempt
}

const workerOf = (log: Log, ref: Storage.ProjectionRef): Storage.ProjectionWorker => {
  const { documents } = log.state
  const key = refKey(ref)
  return {
    readAfter: (after, limit) =>
      Effect.sync(() =>
        log.state.log.slice(indexAfter(log, after), indexAfter(log, after) + limit).map((e) => ({
          ...e,
          txId: BigInt(e.commit),
          archived: archivedStream(log.state, e)
        }))
      ),
    readDocuments: (refs) => Streams.readDocuments(log.state, refs),
    progress: progressOf(log, ref),
    store: (writes, next, deadLetters) =>
      Effect.sync(() => {
        for (const write of writes) documents.set(docKey(write), structuredClone(write))
        log.progress.set(key, next)
        if (deadLetters !== undefined && deadLetters.length > 0) {
          // One per event, as PostgreSQL keys them: a replay's newer error replaces the older; in log order.
          const list = (log.deadLetters.get(key) ?? []).filter((l) => !deadLetters.some((d) => d.event.sequence === l.event.sequence))
          list.push(...structuredClone(deadLetters))
          list.sort((a, b) => Storage.isAfter(a.event, b.event) ? 1 : Storage.isAfter(b.event, a.event) ? -1 : 0)
          log.deadLetters.set(key, list)
        }
      }),
    asked: Effect.sync(() => (log.takeovers.get(key) ?? 0) > 0),
    reset: Effect.sync(() => {
      for (const k of Array.from(documents.keys())) {
        const doc = documents.get(k)!
        if (doc.projection === ref.name && doc.projectionVersion === ref.version) documents.delete(k)
      }
      log.progress.delete(key)
    })
  }
}

const claim = (log: Log, ref: Storage.ProjectionRef): Effect.Effect<Storage.ProjectionWorker, never, Scope.Scope> =>
  Effect.as(lead(log, refKey(ref), true), workerOf(log, ref))

const takeOver = (log: Log, ref: Storage.ProjectionRef): Effect.Effect<Storage.ProjectionWorker, never, Scope.Scope> => {
  const key = refKey(ref)
  const waiting = Effect.acquireRelease(
    Effect.sync(() => {
      log.takeovers.set(key, (log.takeovers.get(key) ?? 0) + 1)
      // Wakes an idle leader, so that it sees the request now rather than at its next poll.
      notify(log.state)
    }),
    () => Effect.sync(() => log.takeovers.set(key, log.takeovers.get(key)! - 1))
  )
  return Effect.zipRight(waiting, Effect.as(lead(log, key, false), workerOf(log, ref)))
}

const archivedStream = (state: State, event: LoggedEvent) => state.streams.get(streamKey(event.tenantId, event.streamId))?.archived === true

const passes = (state: State, event: LoggedEvent, filter: Storage.LogFilter) =>
  (filter.includeArchived === true || !archivedStream(state, event)) &&
  (filter.tenantId === undefined || event.tenantId === filter.tenantId) &&
  (filter.types === undefined || filter.types.includes(event.type)) &&
  (filter.streamTypes === undefined || filter.streamTypes.includes(event.streamType))

const readLog = (log: Log, after: Storage.Checkpoint, limit: number, filter: Storage.LogFilter): Storage.LogPage => {
  const out: Array<Storage.LoggedEvent> = []
  const events = log.state.log
  const from = indexAfter(log, after)
  const to = Math.min(events.length, from + limit)
  for (let i = from; i < to; i++) {
    const e = events[i]
    // Copies: what a reader gets is its own, as from a database.
    if (passes(log.state, e, filter)) out.push({ ...e, data: structuredClone(e.data), metadata: structuredClone(e.metadata), txId: BigInt(e.commit) })
  }
  return { events: out, end: to > from ? positionOf(events[to - 1]) : after, scanned: to - from }
}

/** @internal the projection storage of `state`. */
export const make = (state: State): Storage.ProjectionStorage => {
  const log: Log = { state, progress: new Map(), leaders: new Map(), takeovers: new Map(), deadLetters: new Map() }
  return {
    claim: (ref) => claim(log, ref),
    takeOver: (ref) => takeOver(log, ref),
    deadLetters: (ref) => Effect.sync(() => structuredClone(log.deadLetters.get(refKey(ref)) ?? [])),
    progress: (ref) => progressOf(log, ref),
    head: Effect.sync(() => {
      const last = state.log[state.log.length - 1]
      return last === undefined ? { checkpoint: Storage.origin, sequence: 0 } : { checkpoint: positionOf(last), sequence: last.sequence }
    }),
    readLog: (after, limit, filter) => Effect.sync(() => readLog(log, after, limit, filter)),
    // Commits are atomic here: whatever is in the log is settled.
    settled: () => Effect.succeed(true),
    countAfter: (after) => Effect.sync(() => state.log.length - indexAfter(log, after)),
    changes: Stream.async<void>((emit) => {
      const listener = () => void emit.single(undefined)
      state.listeners.add(listener)
      return Effect.sync(() => state.listeners.delete(listener))
    })
  }
}
