/**
 * Transactions and commits of the in-memory store: a commit takes the stream
 * locks its owner does not hold yet, then applies its batch in one step; a
 * transaction holds its locks until it commits or its scope closes.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { EventStoreError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import * as Locks from "./locks.js"
import { type State, streamKey } from "./state.js"
import * as Streams from "./streams.js"

/**
 * @internal waits for the locks of the streams `who` does not hold yet, in id
 * order (interruptibly: an interrupted save gives up its place and writes
 * nothing), applies the batch, and gives back the locks it took.
 */
export const commitAs = (state: State, who: Locks.Owner, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> => {
  const { locks } = state
  // Archiving takes the stream's lock too, as PostgreSQL's update of its row does:
  // it waits for a session holding it (an exclusive fetch) to save first.
  const keys = batch.streams.map((s) => streamKey(batch.tenantId, s.streamId))
  for (const id of batch.archive ?? []) keys.push(streamKey(batch.tenantId, id))
  const ids = Array.from(new Set(keys)).filter((id) => !who.held.has(id)).sort()
  const taken: Array<string> = []
  const applyNow = Effect.flatMap(Clock.currentTimeMillis, (now) => Streams.apply(state, batch, now))
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

/** @internal opens a transaction: an owner of locks, all given back when the scope closes. */
export const begin = (state: State, reads: Streams.Reads): Effect.Effect<Storage.Transaction, never, Scope.Scope> =>
  Effect.gen(function*() {
    const who = Locks.owner()
    const releaseAll = Effect.sync(() => state.locks.releaseAll(who))
    yield* Effect.addFinalizer(() => releaseAll)
    return {
      ...reads,
      lock: (id: string, _type: string, tenant: string, timeout: Duration.Duration) => state.locks.lock(streamKey(tenant, id), who, timeout),
      commit: (batch) => Effect.ensuring(commitAs(state, who, batch), releaseAll)
    }
  })
