/**
 * Stream locks of the in-memory store: one mutex per stream, owned by a
 * session's transaction (or a commit), standing in for PostgreSQL's row lock.
 *
 * Built by hand rather than on `Effect.Semaphore` so that a grant is recorded
 * in its owner synchronously, at the moment it is given: an interruption that
 * races with the grant (a time-out, a cancelled fiber) then finds it and gives
 * it back, and a lock can never be left held by nobody. Waiting also checks
 * the wait-for graph, so that a cycle is refused at once as a deadlock, as
 * PostgreSQL's deadlock detector refuses it.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** Whoever holds locks: a transaction, or one commit of streams it did not lock. */
export interface Owner {
  readonly held: Set<string>
  /** The stream this owner waits for, if it waits. */
  waitingFor: string | undefined
}

interface Waiter {
  readonly owner: Owner
  readonly grant: () => void
}

interface Lock {
  owner: Owner | undefined
  readonly queue: Array<Waiter>
}

/** The outcome of one attempt to lock. */
export type Outcome = "Locked" | "TimedOut" | "Deadlocked"

/** A new owner with nothing held. */
export const owner = (): Owner => ({ held: new Set(), waitingFor: undefined })

/** The stream locks of one store. */
export const make = () => {
  const locks = new Map<string, Lock>()
  const lockOf = (id: string) => {
    let lock = locks.get(id)
    if (lock === undefined) locks.set(id, lock = { owner: undefined, queue: [] })
    return lock
  }

  const give = (id: string, lock: Lock, to: Owner) => {
    lock.owner = to
    to.held.add(id)
  }

  // Would `who` waiting for `id` close a cycle of owners waiting for each other?
  const closesCycle = (who: Owner, id: string) => {
    const seen = new Set<Owner>()
    let holder = locks.get(id)?.owner
    while (holder !== undefined && !seen.has(holder)) {
      if (holder === who) return true
      seen.add(holder)
      holder = holder.waitingFor === undefined ? undefined : locks.get(holder.waitingFor)?.owner
    }
    return false
  }

  /** Gives a held lock to the next waiter, or frees it. */
  const release = (id: string, from: Owner) => {
    const lock = locks.get(id)
    from.held.delete(id)
    if (lock === undefined || lock.owner !== from) return
    lock.owner = undefined
    const next = lock.queue.shift()
    if (next !== undefined) next.grant()
    else locks.delete(id)
  }

  /** Gives back everything an owner holds. */
  const releaseAll = (from: Owner) => {
    for (const id of Array.from(from.held)) release(id, from)
  }

  /**
   * Waits for the lock (interruptibly); fails with "Deadlocked" at once when
   * waiting would close a cycle. Once it succeeds the lock is in `who.held`.
   */
  const acquire = (id: string, who: Owner): Effect.Effect<void, "Deadlocked"> =>
    Effect.async<void, "Deadlocked">((resume) => {
      const lock = lockOf(id)
      if (lock.owner === who) return resume(Effect.void)
      if (lock.owner === undefined) {
        give(id, lock, who)
        return resume(Effect.void)
      }
      if (closesCycle(who, id)) return resume(Effect.fail("Deadlocked"))
      let granted = false
      const waiter: Waiter = {
        owner: who,
        grant: () => {
          granted = true
          who.waitingFor = undefined
          give(id, lock, who)
          resume(Effect.void)
        }
      }
      who.waitingFor = id
      lock.queue.push(waiter)
      return Effect.sync(() => {
        who.waitingFor = undefined
        const i = lock.queue.indexOf(waiter)
        if (i >= 0) lock.queue.splice(i, 1)
        // Granted just as the waiter went away: the grant is given back, not lost.
        else if (granted) release(id, who)
      })
    })

  /** Tries for the lock until `timeout`. */
  const lock = (id: string, who: Owner, timeout: import("effect/Duration").Duration): Effect.Effect<Outcome> =>
    acquire(id, who).pipe(
      Effect.timeoutOption(timeout),
      Effect.map((had): Outcome => Option.isSome(had) ? "Locked" : "TimedOut"),
      Effect.catchAll(() => Effect.succeed<Outcome>("Deadlocked"))
    )

  /** Whether a stream is locked by anyone (for tests and checks). */
  const isLocked = (id: string) => locks.get(id)?.owner !== undefined

  return { acquire, lock, release, releaseAll, isLocked }
}
