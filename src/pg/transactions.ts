/**
 * The sessions' transactions of the PostgreSQL storage, and their stream
 * locks: a transaction of our own on a reserved connection, or a savepoint
 * inside a caller's.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Context from "effect/Context"
import * as Scope from "effect/Scope"
import { EventStoreError } from "../Errors.js"
import * as Fiber from "../internal/fiber.js"
import type * as Storage from "../Storage.js"
import * as Commits from "./commits.js"
import * as Driver from "./driver.js"
import * as Spans from "./spans.js"
import { outcomeUnknown, retryable, sqlState, wrap } from "./failures.js"
import * as Reads from "./reads.js"
import type { Store } from "./store.js"

// One session's transaction on its connection.
interface Tx {
  readonly store: Store
  readonly conn: SqlConnection.Connection
  /** The transaction's depth on its connection: 0 for our own. */
  readonly depth: number
  /** Whether it is a transaction of our own, not a savepoint in a caller's. */
  readonly own: boolean
  readonly statements: { readonly begin: string; readonly commit: string; readonly rollback: string }
  /** Whether the transaction (or savepoint) has begun and not ended. */
  open: boolean
  ensureOpen: Effect.Effect<void, EventStoreError>
}

const failedWith = (message: string) => (e: SqlError | EventStoreError) => e instanceof EventStoreError ? e : wrap(message)(e)

/**
 * Begins a session's transaction, ended (rolled back unless committed) with the scope.
 *
 * @since 0.1.0
 */
export const begin = (store: Store, reads: Reads.Reads): Effect.Effect<Storage.Transaction, EventStoreError, Scope.Scope> =>
  // Combinators rather than a generator, and a finalizer on the scope itself
  // (`Effect.addFinalizer` diffs and patches the fiber's FiberRefs at both
  // ends): this runs once per exclusive command, inside its lock's window.
  Effect.withFiberRuntime<Storage.Transaction, SqlError | EventStoreError, Scope.Scope>((fiber) => {
    const scope = Context.unsafeGet(fiber.currentContext as Context.Context<Scope.Scope>, Scope.Scope)
    // Inside a caller's transaction the session's transaction is a savepoint
    // of it, so the caller's commit or rollback decides for both.
    const outer = Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)
    const made = (conn: SqlConnection.Connection): Effect.Effect<Storage.Transaction, SqlError> => {
      const statements = Option.isSome(outer)
        ? { begin: "SAVEPOINT chronicle_session", commit: "RELEASE SAVEPOINT chronicle_session", rollback: "ROLLBACK TO SAVEPOINT chronicle_session" }
        : { begin: "BEGIN", commit: "COMMIT", rollback: "ROLLBACK" }
      const tx: Tx = {
        store,
        conn,
        depth: Option.isSome(outer) ? outer.value[1] + 1 : 0,
        own: Option.isNone(outer),
        statements,
        open: false,
        ensureOpen: Effect.void
      }
      tx.ensureOpen = Effect.suspend(() => {
        if (tx.open) return Effect.void
        tx.open = true
        return Spans.unprepared(store.driver, conn, statements.begin)
      }).pipe(Effect.mapError(failedWith("Opening a transaction failed")))
      const transaction: Storage.Transaction = {
        readStream: (tenantId, id, options) => inTx(tx, Reads.readStream(reads, tenantId, id, options)),
        loadSnapshot: (tenantId, id, projection, versions) => inTx(tx, Reads.loadSnapshot(store, tenantId, id, projection, versions)),
        readDocuments: (refs) => inTx(tx, Reads.readDocuments(store, refs)),
        lock: (id, type, tenant, timeout) => lock(tx, id, type, tenant, timeout),
        commit: (batch) => commit(tx, batch)
      }
      const rollback = Effect.suspend(() => tx.open ? Effect.ignore(Spans.unprepared(store.driver, conn, statements.rollback)) : Effect.void)
      // A transaction of our own begins with its first lock, in the same round
      // trip as setting the lock time-out; a savepoint in a caller's begins now.
      if (Option.isNone(outer)) return Effect.as(Scope.addFinalizer(scope, rollback), transaction)
      tx.open = true
      return Effect.zipRight(Spans.unprepared(store.driver, conn, statements.begin), Effect.as(Scope.addFinalizer(scope, rollback), transaction))
    }
    return Option.isSome(outer) ? made(outer.value[0]) : Effect.flatMap(store.driver.reserve, made)
  }).pipe(Effect.mapError(failedWith("Opening a transaction failed")))

// Every statement of the transaction runs on its connection.
const inTx = <A, E, R>(tx: Tx, effect: Effect.Effect<A, E, R>) =>
  Fiber.provideService(
    Effect.zipRight(tx.ensureOpen, effect),
    SqlClient.TransactionConnection,
    [tx.conn, tx.depth] as const
  )

// A lock not had in time (55P03), or refused by the deadlock detector (40P01).
const notHad = (e: SqlError | EventStoreError): Storage.LockOutcome | undefined =>
  e._tag !== "SqlError" ? undefined : sqlState(e) === "55P03" ? "TimedOut" : sqlState(e) === "40P01" ? "Deadlocked" : undefined
const timeoutOf = (timeout: Duration.Duration) => `${Math.max(1, Math.round(Duration.toMillis(timeout)))}ms`
const setTimeout = (timeout: Duration.Duration) =>
  `SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', '${timeoutOf(timeout)}', true)`
const exec = (tx: Tx, statement: string, text: string) =>
  Spans.statementSpan(tx.store.driver, statement, text, Driver.unpreparedResults<{ previous: string }>(tx.conn, text))

// Locks, then undoes what a lock not had left (with `undo`), or fails.
const tryLock = (
  tx: Tx,
  id: string,
  type: string,
  tenant: string,
  previous: string,
  kept: Effect.Effect<unknown, SqlError>,
  undo: Effect.Effect<unknown, SqlError>
) => {
  const { driver, names, q } = tx.store
  return Effect.flatMap(Effect.either(inTx(tx, Driver.prepared(driver, names.lock, q.lock, [id, type, tenant, previous]))), (locked) => {
    if (Either.isRight(locked)) return Effect.as(kept, "Locked" as const)
    const outcome = notHad(locked.left)
    return outcome === undefined ? Effect.fail(locked.left) : Effect.as(undo, outcome)
  })
}

// Under a lock time-out that ends with the lock: the save's own waits
// stay unbounded, as PostgreSQL's default. The first lock of our own
// transaction costs two round trips: BEGIN with the time-out, then the
// lock, which restores the time-out once it has the row. Failing, it
// leaves nothing to keep: the transaction rolls back and begins anew.
const firstLock = (tx: Tx, id: string, type: string, tenant: string, timeout: Duration.Duration) =>
  Effect.suspend(() => {
    tx.open = true
    return Effect.flatMap(exec(tx, "begin_lock_timeout", `BEGIN; ${setTimeout(timeout)}`), (results) =>
      tryLock(tx, id, type, tenant, results[1][0].previous, Effect.void, Effect.suspend(() => {
        tx.open = false
        return exec(tx, "rollback", tx.statements.rollback)
      })))
  })

// Later locks (or any in a caller's transaction) keep what the
// transaction holds: a lock not had rolls back to a savepoint.
const laterLock = (tx: Tx, id: string, type: string, tenant: string, timeout: Duration.Duration) =>
  Effect.zipRight(
    tx.ensureOpen,
    Effect.flatMap(exec(tx, "savepoint_lock_timeout", `SAVEPOINT chronicle_lock; ${setTimeout(timeout)}`), (results) =>
      tryLock(
        tx,
        id,
        type,
        tenant,
        results[1][0].previous,
        exec(tx, "release_savepoint", "RELEASE SAVEPOINT chronicle_lock"),
        exec(tx, "rollback_to_savepoint", "ROLLBACK TO SAVEPOINT chronicle_lock")
      ))
  )

const lock = (tx: Tx, id: string, type: string, tenant: string, timeout: Duration.Duration) =>
  Effect.suspend(() => tx.open ? laterLock(tx, id, type, tenant, timeout) : firstLock(tx, id, type, tenant, timeout)).pipe(
    Effect.mapError((e) => e._tag === "SqlError" ? wrap(`Locking stream "${id}" failed`)(e) : e)
  )

const commit = (tx: Tx, batch: Storage.CommitBatch) =>
  Effect.flatMap(
    batch.streams.length === 0 && !Commits.archives(batch)
      ? Effect.succeed(Either.right<Storage.CommitResult>({ _tag: "Committed", streams: [] }))
      : Effect.either(inTx(tx, Commits.run(tx.store, batch))),
    (result): Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> => {
      const wasOpen = tx.open
      tx.open = false
      const ok = Either.isRight(result) ? result.right._tag === "Committed" : false
      const outcome: Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> = Either.isRight(result)
        ? Effect.succeed(result.right)
        : retryable(result.left)
        ? Commits.conflictsAfter(tx.store, batch, result.left)
        : Effect.fail(result.left)
      if (!wasOpen) return outcome
      return Effect.zipRight(
        Spans.unprepared(tx.store.driver, tx.conn, ok ? tx.statements.commit : tx.statements.rollback).pipe(
          // A COMMIT of our own sent and never answered may have committed.
          Effect.tapError((e) =>
            Effect.sync(() => {
              if (ok && tx.own && Driver.sentAndLost(e)) outcomeUnknown.add(e)
            })
          )
        ),
        outcome
      )
    }
  ).pipe(Effect.mapError(failedWith("Saving events failed")))
