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
import { docKey, type LoggedEvent, type State } from "./state.js"
import * as Streams from "./streams.js"

/** What the log adds to the store's state: each projection's progress and leadership, by refKey. */
interface Log {
  readonly state: State
  readonly progress: Map<string, Storage.Progress>
  readonly leaders: Map<string, Effect.Semaphore>
}

const refKey = (ref: Storage.ProjectionRef) => `${ref.name}\u0000${ref.version}`
const positionOf = (event: LoggedEvent): Storage.Checkpoint => ({ txId: BigInt(event.commit), sequence: event.sequence })
const progressOf = (log: Log, ref: Storage.ProjectionRef) =>
  Effect.sync(() => log.progress.get(refKey(ref)) ?? { checkpoint: Storage.origin, processed: 0 })
// The log is in (commit, sequence) order and sequences are 1..n, so a position is an index.
const indexAfter = (log: Log, after: Storage.Checkpoint) => Math.min(after.sequence, log.state.log.length)

const claim = (log: Log, ref: Storage.ProjectionRef): Effect.Effect<Storage.ProjectionWorker, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { documents } = log.state
    const key = refKey(ref)
    let leader = log.leaders.get(key)
    if (leader === undefined) log.leaders.set(key, leader = Effect.unsafeMakeSemaphore(1))
    const lock = leader
    yield* Effect.acquireRelease(lock.take(1), () => lock.release(1)).pipe(Effect.interruptible)
    return {
      readAfter: (after, limit) =>
        Effect.sync(() =>
          log.state.log.slice(indexAfter(log, after), indexAfter(log, after) + limit).map((e) => ({ ...e, txId: BigInt(e.commit) }))
        ),
      readDocuments: (refs) => Streams.readDocuments(log.state, refs),
      progress: progressOf(log, ref),
      store: (writes, next) =>
        Effect.sync(() => {
          for (const write of writes) documents.set(docKey(write), structuredClone(write))
          log.progress.set(key, next)
        }),
      reset: Effect.sync(() => {
        for (const k of Array.from(documents.keys())) {
          const doc = documents.get(k)!
          if (doc.projection === ref.name && doc.projectionVersion === ref.version) documents.delete(k)
        }
        log.progress.delete(key)
      })
    } satisfies Storage.ProjectionWorker
  })

const passes = (event: LoggedEvent, filter: Storage.LogFilter) =>
  (filter.tenantId === undefined || event.tenantId === filter.tenantId) &&
  (filter.types === undefined || filter.types.includes(event.type)) &&
  (filter.streamTypes === undefined || filter.streamTypes.includes(event.streamType))

const readLog = (log: Log, after: Storage.Checkpoint, limit: number, filter: Storage.LogFilter) => {
  const out: Array<Storage.LoggedEvent> = []
  const events = log.state.log
  for (let i = indexAfter(log, after); i < events.length && out.length < limit; i++) {
    const e = events[i]
    // Copies: what a reader gets is its own, as from a database.
    if (passes(e, filter)) out.push({ ...e, data: structuredClone(e.data), metadata: structuredClone(e.metadata), txId: BigInt(e.commit) })
  }
  return out
}

/** @internal the projection storage of `state`. */
export const make = (state: State): Storage.ProjectionStorage => {
  const log: Log = { state, progress: new Map(), leaders: new Map() }
  return {
    claim: (ref) => claim(log, ref),
    progress: (ref) => progressOf(log, ref),
    head: Effect.sync(() => {
      const last = state.log[state.log.length - 1]
      return last === undefined ? { checkpoint: Storage.origin, sequence: 0 } : { checkpoint: positionOf(last), sequence: last.sequence }
    }),
    readLog: (after, limit, filter) => Effect.sync(() => readLog(log, after, limit, filter)),
    countAfter: (after) => Effect.sync(() => state.log.length - indexAfter(log, after)),
    changes: Stream.async<void>((emit) => {
      const listener = () => void emit.single(undefined)
      state.listeners.add(listener)
      return Effect.sync(() => state.listeners.delete(listener))
    })
  }
}
