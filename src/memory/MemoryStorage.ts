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
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Storage from "../Storage.js"

interface StreamRow {
  readonly aggregateType: string
  version: number
  readonly events: Array<Storage.StoredEvent>
}

/**
 * Creates an empty in-memory store.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Storage.Storage> = Effect.sync(() => {
  const streams = new Map<string, StreamRow>()
  const log: Array<Storage.StoredEvent> = []
  // One mutex per stream stands in for PostgreSQL's row lock on the stream.
  const locks = new Map<string, Effect.Semaphore>()
  const lockOf = (id: string) => {
    let lock = locks.get(id)
    if (lock === undefined) {
      lock = Effect.unsafeMakeSemaphore(1)
      locks.set(id, lock)
    }
    return lock
  }

  const readStream = (id: string, options?: Storage.ReadOptions) =>
    Effect.sync((): ReadonlyArray<Storage.StoredEvent> => {
      const row = streams.get(id)
      if (row === undefined) return []
      const from = options?.fromVersion ?? 1
      const to = options?.toVersion ?? Number.POSITIVE_INFINITY
      const until = options?.toTimestamp?.getTime() ?? Number.POSITIVE_INFINITY
      return row.events.filter((e) => e.version >= from && e.version <= to && e.timestamp.getTime() <= until)
    })

  // Checks and applies a batch in one synchronous step: nothing can interleave,
  // so either every stream passes and is written or nothing is.
  const apply = (batch: Storage.CommitBatch, now: number): Storage.CommitResult => {
    const conflicts: Array<Storage.Conflict> = []
    for (const write of batch.streams) {
      const actual = streams.get(write.streamId)?.version ?? 0
      if (write.expected !== "any" && write.expected !== actual) {
        conflicts.push({ streamId: write.streamId, expected: write.expected, actual })
      }
    }
    if (conflicts.length > 0) return { _tag: "Conflicted", conflicts }
    const timestamp = new Date(now)
    const committed = batch.streams.map((write): Storage.CommittedStream => {
      let row = streams.get(write.streamId)
      if (row === undefined) {
        row = { aggregateType: write.aggregateType, version: 0, events: [] }
        if (write.events.length > 0) streams.set(write.streamId, row)
      }
      const previousVersion = row.version
      const appended = write.events.map((event): Storage.AppendedEvent => {
        const stored: Storage.StoredEvent = {
          streamId: write.streamId,
          version: ++row.version,
          sequence: log.length + 1,
          type: event.type,
          // A deep copy, as a database would keep, so later mutation of the caller's objects cannot leak in.
          data: structuredClone(event.data),
          metadata: structuredClone(event.metadata),
          timestamp,
          tenantId: batch.tenantId
        }
        log.push(stored)
        row.events.push(stored)
        return { version: stored.version, sequence: stored.sequence, timestamp }
      })
      return { streamId: write.streamId, previousVersion, version: row.version, events: appended }
    })
    return { _tag: "Committed", streams: committed }
  }

  // Takes the locks of the streams a commit touches that `held` does not
  // already own (in id order, so two commits cannot deadlock), like the row
  // locks a PostgreSQL update waits for, then applies the batch.
  const commitWith = (held: ReadonlySet<string>) => (batch: Storage.CommitBatch) => {
    const ids = batch.streams.map((s) => s.streamId).filter((id) => !held.has(id)).sort()
    const applyNow = Effect.map(Clock.currentTimeMillis, (now) => apply(batch, now))
    // withPermits waits interruptibly, so an interrupted save gives up its place and writes nothing.
    return ids.reduceRight<Effect.Effect<Storage.CommitResult>>((inner, id) => lockOf(id).withPermits(1)(inner), applyNow)
  }

  const begin: Effect.Effect<Storage.Transaction, never, Scope.Scope> = Effect.gen(function*() {
    const held = new Set<string>()
    const releaseAll = Effect.suspend(() => {
      const ids = Array.from(held)
      held.clear()
      return Effect.forEach(ids, (id) => lockOf(id).release(1), { discard: true })
    })
    yield* Effect.addFinalizer(() => releaseAll)
    const lock = (id: string, _type: string, _tenant: string, timeout: Duration.Duration) =>
      held.has(id) ? Effect.succeed(true) : Effect.uninterruptibleMask((restore) =>
        restore(Effect.timeoutOption(lockOf(id).take(1), timeout)).pipe(
          Effect.map((taken) => {
            if (Option.isSome(taken)) held.add(id)
            return Option.isSome(taken)
          })
        )
      )
    return {
      readStream,
      lock,
      commit: (batch) => Effect.ensuring(commitWith(held)(batch), releaseAll)
    }
  })

  return { readStream, commit: commitWith(new Set()), begin }
})
