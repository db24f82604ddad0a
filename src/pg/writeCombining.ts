/**
 * Write-combining. While fewer than `maxSavesInFlight` statements of a store
 * are running, a save goes alone, at once; saves that arrive beyond that wait
 * and then go together in one statement (one round trip, one commit), each
 * stream checked on its own so that a conflict in one never fails another.
 * A save is never written twice: the saves of a failed shared statement go
 * again alone only when it is known not to have committed (the server refused
 * it, or its token shows it never will); with its answer lost, its token
 * tells what it wrote (the fence of the `commits` table).
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import { EventStoreError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import * as Combiner from "./combiner.js"
import { commitDirect, execute, type Sent, settle } from "./commits.js"
import { connectionLost } from "./failures.js"
import * as Spans from "./spans.js"
import { appendedTo, type CommitRow } from "./rows.js"
import type { Store } from "./store.js"

/**
 * How many saves of one store run as statements of their own at once before
 * further concurrent saves are combined: up to here separate statements are
 * as cheap; beyond, sharing one saves round trips and commits.
 *
 * @since 0.1.0
 */
export const maxSavesInFlight = 8

/**
 * A save waiting to be combined: one stream, no documents, no inline work.
 *
 * @since 0.1.0
 */
export interface SaveWaiter extends Combiner.Waiter<Storage.CommitResult, EventStoreError> {
  readonly batch: Storage.CommitBatch
}

/**
 * The saves of one store.
 *
 * @since 0.1.0
 */
export interface Saves {
  readonly store: Store
  readonly combiner: Combiner.Combiner<Storage.CommitResult, EventStoreError, SaveWaiter>
}

/**
 * The saves of a store; without `combining` each queued save still waits for
 * a free slot, but goes alone.
 *
 * @since 0.1.0
 */
export const make = (store: Store, combining: boolean): Saves => {
  const combineLimit = combining ? 128 : 1
  const pruned = { at: 0 }
  const combiner = Combiner.make<Storage.CommitResult, EventStoreError, SaveWaiter>({
    maxInFlight: maxSavesInFlight,
    // Without combining each queued save is a statement of its own: all the slots may serve them.
    maxQueuedInFlight: combining ? Combiner.maxQueuedInFlight : maxSavesInFlight,
    take: (queue) => take(queue, combineLimit),
    send: (taken, landed) => send(store, pruned, taken, landed)
  })
  return { store, combiner }
}

// One tenant's saves of distinct streams, in the order they came.
const take = (queue: Array<SaveWaiter>, combineLimit: number) => {
  const tenant = queue[0].batch.tenantId
  const ids = new Set<string>()
  const taken: Array<SaveWaiter> = []
  for (let i = 0; i < queue.length && taken.length < combineLimit;) {
    const waiter = queue[i]
    const id = waiter.batch.streams[0].streamId
    if (!ids.has(id) && waiter.batch.tenantId === tenant) {
      ids.add(id)
      taken.push(waiter)
      queue.splice(i, 1)
    } else i++
  }
  return taken
}

// Queued saves run in fibers of their own, whose end (even by the waiter's
// interruption) gives the slot back.
const send = (store: Store, pruned: { at: number }, taken: Array<SaveWaiter>, landed: () => void) => {
  const runtime = store.driver.runtime
  if (taken.length === 1) {
    const waiter = taken[0]
    waiter.cancel = Runtime.runCallback(runtime)(Combiner.traced(taken, commitDirect(store, waiter.batch)), {
      onExit: (exit) => {
        landed()
        waiter.resume(exit)
      }
    })
    return
  }
  // A shared statement is not cancelled when one of its saves is
  // interrupted: the others' outcome must stay known.
  prune(store, pruned)
  const combined: Storage.CommitBatch = { tenantId: taken[0].batch.tenantId, streams: taken.map((w) => w.batch.streams[0]) }
  Runtime.runCallback(runtime)(Combiner.traced(taken, runCombined(store, combined, crypto.randomUUID())), {
    onExit: (exit) => {
      landed()
      for (const waiter of taken) {
        const verdict = exit._tag === "Success" ? exit.value(waiter.batch.streams[0].streamId) : undefined
        waiter.resume(verdict ?? commitDirect(store, waiter.batch))
      }
    }
  })
}

// Tokens are needed only for the minutes a look-up may take; pruned at most once a minute.
const prune = (store: Store, pruned: { at: number }) => {
  if (Date.now() - pruned.at < 60_000) return
  pruned.at = Date.now()
  Runtime.runCallback(store.driver.runtime)(Effect.ignore(Spans.query(store, "pruneTokens")))
}

// What each save of a combined statement resumes with: its result, or
// (undefined) going again alone, known not to be written.
type Verdicts = (streamId: string) => Effect.Effect<Storage.CommitResult, EventStoreError> | undefined
const again: Verdicts = () => undefined
const verdictsOf = (store: Store, batch: Storage.CommitBatch, sent: Sent): Effect.Effect<Verdicts> =>
  settle(store, batch, sent).pipe(
    Effect.map(({ committed, conflicts }): Verdicts => {
      const byId = new Map<string, Storage.CommitResult>()
      for (const c of committed) byId.set(c.streamId, { _tag: "Committed", streams: [c] })
      for (const c of conflicts) byId.set(c.streamId, { _tag: "Conflicted", conflicts: [c] })
      return (id) => Effect.succeed(byId.get(id)!)
    }),
    // Reading the versions of the losers failed: they wrote nothing, so they go again.
    Effect.orElseSucceed((): Verdicts => (id) => sent.passed.has(id) ? verdictsFor(batch, sent, id) : undefined)
  )
const verdictsFor = (batch: Storage.CommitBatch, sent: Sent, id: string) => {
  const write = batch.streams.find((w) => w.streamId === id)!
  const version = sent.passed.get(id)!
  const events = (sent.appended.get(id) ?? []).sort((a, b) => a.version - b.version)
  return Effect.succeed<Storage.CommitResult>({
    _tag: "Committed",
    streams: [{ streamId: id, previousVersion: version - write.events.length, version, events }]
  })
}
// After a lost answer: claim the token, or find the transaction that wrote
// it and the events it appended. Retried briefly (the server may be
// restarting); the tokens are kept long enough for that.
const lookUp = (store: Store, batch: Storage.CommitBatch, token: string): Effect.Effect<Sent | undefined, EventStoreError> =>
  Effect.gen(function*() {
    const claimed = yield* Spans.query(store, "claimToken", [token])
    if (claimed.length > 0) return undefined
    const tx = yield* Spans.query<{ tx_id: string | null }>(store, "tokenTx", [token])
    if (tx.length === 0) return yield* Effect.fail(new EventStoreError({ message: "The commit token is gone" }))
    // Our own claim, whose answer was lost before this try.
    if (tx[0].tx_id === null) return undefined
    const rows = yield* Spans.query<CommitRow>(store, "committedBy", [tx[0].tx_id, batch.tenantId])
    const passed = new Map<string, number>()
    const appended = new Map<string, Array<Storage.AppendedEvent>>()
    for (const row of rows) {
      appendedTo(appended, row)
      passed.set(row.stream_id, Math.max(passed.get(row.stream_id) ?? 0, Number(row.version)))
    }
    return { passed, appended }
  }).pipe(
    Effect.retry({ schedule: Schedule.exponential("100 millis"), times: 5 }),
    Effect.mapError((cause) =>
      new EventStoreError({
        message: "The connection was lost during a combined save and its commit could not be looked up: the outcome of this save is unknown",
        cause
      })
    )
  )
const runCombined = (store: Store, batch: Storage.CommitBatch, token: string): Effect.Effect<Verdicts> =>
  Effect.exit(execute(store, batch, token)).pipe(
    Effect.flatMap((exit): Effect.Effect<Verdicts> => {
      if (exit._tag === "Success") return verdictsOf(store, batch, exit.value)
      const error = Cause.failureOption(exit.cause)
      // The server refused the statement: it rolled back whole.
      if (Option.isSome(error) && !connectionLost(error.value)) return Effect.succeed(again)
      return lookUp(store, batch, token).pipe(
        Effect.flatMap((sent) => sent === undefined ? Effect.succeed(again) : verdictsOf(store, batch, sent)),
        Effect.catchAll((e) => Effect.succeed<Verdicts>(() => Effect.fail(e)))
      )
    })
  )

const combinable = (batch: Storage.CommitBatch) =>
  batch.streams.length === 1 && batch.inline === undefined && (batch.documents?.length ?? 0) === 0 && batch.archive === undefined

/**
 * Saves a batch: alone, or combined with other sessions' saves under load.
 *
 * @since 0.1.0
 */
export const commit = (saves: Saves, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> =>
  !combinable(batch) ? commitDirect(saves.store, batch) : Effect.withFiberRuntime((fiber) =>
    // Inside a transaction the save must use its connection: it cannot be combined.
    Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some"
      ? commitDirect(saves.store, batch)
      : Combiner.free(saves.combiner)
      ? Combiner.alone(saves.combiner, commitDirect(saves.store, batch))
      : Combiner.enqueue(saves.combiner, { batch, resume: Combiner.unqueued, gone: false, cancel: undefined })
  )
