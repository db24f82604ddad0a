/**
 * The PostgreSQL storage, over `@effect/sql`.
 *
 * A save of one stream is one statement and one round trip: a CTE bumps the
 * stream row only if its version matches, and inserts the events only if every
 * stream in the batch passed, so a losing writer never draws a sequence number.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventStoreError } from "../Errors.js"
import * as Storage from "../Storage.js"
import * as Driver from "./driver.js"
import * as Commits from "./commits.js"
import * as Reads from "./reads.js"
import * as WriteCombining from "./writeCombining.js"
import type { Store } from "./store.js"
import { outcomeUnknown, retryable, sqlState, wrap } from "./failures.js"
import { checkpointOf, type LoggedRow, toStored, writeArrays } from "./rows.js"
import { notifyChannel, preparedNames, quoteSchema, statements } from "./statements.js"

export { sqlState } from "./failures.js"
export { combinedReadStatements, maxReadsInFlight } from "./reads.js"
export { maxSavesInFlight } from "./writeCombining.js"
export { migrate } from "./migrations.js"
export { notifyChannel, quoteSchema, singleStreamStatement, statementName, statements } from "./statements.js"

/**
 * Options of the PostgreSQL storage.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The PostgreSQL schema the tables live in (default `chronicle`). */
  readonly schema?: string | undefined
  /** How often a projection daemon that does not lead a projection tries to take it over (default 500 ms). */
  readonly claimInterval?: Duration.DurationInput | undefined
  /** Whether concurrent single-stream saves may share one statement (default true). */
  readonly writeCombining?: boolean | undefined
  /** Whether concurrent whole-stream reads outside a transaction may share one statement (default true). */
  readonly readCombining?: boolean | undefined
}

/**
 * @internal the statements of a store now running alone or combined, and the
 * reads and saves waiting to be combined: all zero once the store is idle.
 */
export const inFlightOf = new WeakMap<Storage.Storage, () => { readonly reads: number; readonly saves: number; readonly queued: number }>()

/**
 * Creates the PostgreSQL storage over the `SqlClient` in context (tables must
 * exist: see `migrate`).
 *
 * @since 0.1.0
 */
export const make = (options?: Options) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const schema = options?.schema ?? "chronicle"
    const quoted = quoteSchema(schema)
    const q = statements(quoted)
    const names = preparedNames(schema)
    const driver = yield* Driver.make(sql, [names.read, names.readAll, names.readFrom, names.readMany, names.snapshot])
    const reserve = driver.reserve
    const channel = notifyChannel(schema)


    // pg_notify makes commits queue on a cluster-wide lock, so appends notify
    // only while some daemon listens (it registers in the listeners table);
    // daemons poll as well, which covers the second it takes to notice.
    const listeners = { listening: false }
    const refreshListening = sql.unsafe<{ listening: boolean }>(q.listening).pipe(
      Effect.map((rows) => {
        listeners.listening = rows[0]?.listening === true
      }),
      Effect.ignore
    )
    yield* refreshListening
    yield* Effect.forkScoped(Effect.repeat(refreshListening, Schedule.spaced("1 second")))
    const store: Store = { sql, schema, quoted, q, names, driver, channel, listeners, singleStatements: new Map() }
    const reads = Reads.make(store, options?.readCombining !== false)
    const readStream = (tenantId: string, id: string, options?: Storage.ReadOptions) => Reads.readStream(reads, tenantId, id, options)
    const loadSnapshot = (tenantId: string, id: string, projection: string, versions: ReadonlyArray<number>) =>
      Reads.loadSnapshot(store, tenantId, id, projection, versions)
    const readDocuments = (refs: ReadonlyArray<Storage.DocumentRef>) => Reads.readDocuments(store, refs)
    const saves = WriteCombining.make(store, options?.writeCombining !== false)
    const commit = (batch: Storage.CommitBatch) => WriteCombining.commit(saves, batch)
    const run = (batch: Storage.CommitBatch) => Commits.run(store, batch)
    const conflictsAfter = (batch: Storage.CommitBatch, error: SqlError) => Commits.conflictsAfter(store, batch, error)

    const begin: Effect.Effect<Storage.Transaction, EventStoreError, Scope.Scope> = Effect.gen(function*() {
      // Inside a caller's transaction the session's transaction is a savepoint
      // of it, so the caller's commit or rollback decides for both.
      const outer = yield* Effect.serviceOption(SqlClient.TransactionConnection)
      const conn: SqlConnection.Connection = Option.isSome(outer) ? outer.value[0] : yield* reserve
      const statements = Option.isSome(outer)
        ? { begin: "SAVEPOINT chronicle_session", commit: "RELEASE SAVEPOINT chronicle_session", rollback: "ROLLBACK TO SAVEPOINT chronicle_session" }
        : { begin: "BEGIN", commit: "COMMIT", rollback: "ROLLBACK" }
      // A transaction of our own begins with its first lock, in the same round
      // trip as setting the lock time-out; a savepoint in a caller's begins now.
      let open = false
      if (Option.isSome(outer)) {
        open = true
        yield* conn.executeUnprepared(statements.begin, [], undefined)
      }
      yield* Effect.addFinalizer(() =>
        open ? Effect.ignore(conn.executeUnprepared(statements.rollback, [], undefined)) : Effect.void
      )
      const ensureOpen = Effect.suspend(() => {
        if (open) return Effect.void
        open = true
        return conn.executeUnprepared(statements.begin, [], undefined)
      }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Opening a transaction failed")(e)))
      // Every statement of the transaction runs on its connection.
      const inTx = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.provideService(
          Effect.zipRight(ensureOpen, effect),
          SqlClient.TransactionConnection,
          [conn, Option.isSome(outer) ? outer.value[1] + 1 : 0] as const
        )
      // A lock not had in time (55P03), or refused by the deadlock detector (40P01).
      const notHad = (e: SqlError | EventStoreError): Storage.LockOutcome | undefined =>
        e._tag !== "SqlError" ? undefined : sqlState(e) === "55P03" ? "TimedOut" : sqlState(e) === "40P01" ? "Deadlocked" : undefined
      const timeoutOf = (timeout: Duration.Duration) => `${Math.max(1, Math.round(Duration.toMillis(timeout)))}ms`
      const setTimeout = (timeout: Duration.Duration) =>
        `SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', '${timeoutOf(timeout)}', true)`
      const exec = (text: string) => Driver.unpreparedResults<{ previous: string }>(conn, text)
      // Locks, then undoes what a lock not had left (with `undo`), or fails.
      const tryLock = (
        id: string,
        type: string,
        tenant: string,
        previous: string,
        kept: Effect.Effect<unknown, SqlError>,
        undo: Effect.Effect<unknown, SqlError>
      ) =>
        Effect.flatMap(Effect.either(inTx(Driver.prepared(driver, names.lock, q.lock, [id, type, tenant, previous]))), (locked) => {
          if (Either.isRight(locked)) return Effect.as(kept, "Locked" as const)
          const outcome = notHad(locked.left)
          return outcome === undefined ? Effect.fail(locked.left) : Effect.as(undo, outcome)
        })

      // Under a lock time-out that ends with the lock: the save's own waits
      // stay unbounded, as PostgreSQL's default. The first lock of our own
      // transaction costs two round trips: BEGIN with the time-out, then the
      // lock, which restores the time-out once it has the row. Failing, it
      // leaves nothing to keep: the transaction rolls back and begins anew.
      const firstLock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.suspend(() => {
          open = true
          return Effect.flatMap(exec(`BEGIN; ${setTimeout(timeout)}`), (results) =>
            tryLock(id, type, tenant, results[1][0].previous, Effect.void, Effect.suspend(() => {
              open = false
              return exec(statements.rollback)
            })))
        })
      // Later locks (or any in a caller's transaction) keep what the
      // transaction holds: a lock not had rolls back to a savepoint.
      const laterLock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.zipRight(
          ensureOpen,
          Effect.flatMap(exec(`SAVEPOINT chronicle_lock; ${setTimeout(timeout)}`), (results) =>
            tryLock(id, type, tenant, results[1][0].previous, exec("RELEASE SAVEPOINT chronicle_lock"), exec("ROLLBACK TO SAVEPOINT chronicle_lock")))
        )
      const lock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.suspend(() => open ? laterLock(id, type, tenant, timeout) : firstLock(id, type, tenant, timeout)).pipe(
          Effect.mapError((e) => e._tag === "SqlError" ? wrap(`Locking stream "${id}" failed`)(e) : e)
        )

      const commit = (batch: Storage.CommitBatch) =>
        Effect.gen(function*() {
          const result: Either.Either<Storage.CommitResult, SqlError | EventStoreError> = batch.streams.length === 0
            ? Either.right({ _tag: "Committed", streams: [] })
            : yield* Effect.either(inTx(run(batch)))
          const wasOpen = open
          open = false
          const ok = Either.isRight(result) ? result.right._tag === "Committed" : false
          if (wasOpen) {
            yield* conn.executeUnprepared(ok ? statements.commit : statements.rollback, [], undefined).pipe(
              // A COMMIT of our own sent and never answered may have committed.
              Effect.tapError((e) =>
                Effect.sync(() => {
                  if (ok && Option.isNone(outer) && Driver.sentAndLost(e)) outcomeUnknown.add(e)
                })
              )
            )
          }
          if (Either.isLeft(result)) {
            const error = result.left
            return yield* retryable(error) ? conflictsAfter(batch, error) : Effect.fail(error)
          }
          return result.right
        }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Saving events failed")(e)))

      return {
        readStream: (tenantId, id, options) => inTx(readStream(tenantId, id, options)),
        loadSnapshot: (tenantId, id, projection, versions) => inTx(loadSnapshot(tenantId, id, projection, versions)),
        readDocuments: (refs) => inTx(readDocuments(refs)),
        lock,
        commit
      } satisfies Storage.Transaction
    }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Opening a transaction failed")(e)))

    const progressOf = (ref: Storage.ProjectionRef) =>
      sql.unsafe<{ tx_id: string; seq: string; processed: string }>(q.progress, [ref.name, ref.version]).pipe(
        Effect.map((rows): Storage.Progress =>
          rows.length === 0
            ? { checkpoint: Storage.origin, processed: 0 }
            : { checkpoint: checkpointOf(rows[0]), processed: Number(rows[0].processed) }
        ),
        Effect.mapError(wrap(`Reading the progress of projection ${ref.name} failed`))
      )

    // Leadership is a session advisory lock on a reserved connection, and every
    // statement of the leader runs on that connection: if it dies, so does the
    // lock, and the leader's next statement fails instead of writing as a zombie.
    const claim = (ref: Storage.ProjectionRef) =>
      Effect.gen(function*() {
        const conn: SqlConnection.Connection = yield* reserve
        const onConn = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0] as const)
        const key = [`effect-chronicle:${schema}`, `${ref.name}@${ref.version}`]
        const tryLock = onConn(sql.unsafe<{ ok: boolean }>(q.tryLock, key))
        yield* tryLock.pipe(
          Effect.repeat({ until: (rows) => rows[0].ok, schedule: Schedule.spaced(options?.claimInterval ?? "500 millis") })
        )
        yield* Effect.addFinalizer(() => Effect.ignore(onConn(sql.unsafe(q.unlock, key))))
        // On the leader's connection, so that a lost leadership fails the batch.
        const inTransaction = <A>(effect: Effect.Effect<A, SqlError>) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.zipRight(
              conn.executeUnprepared("BEGIN", [], undefined),
              Effect.flatMap(Effect.exit(restore(onConn(effect))), (exit) =>
                exit._tag === "Success"
                  ? Effect.as(conn.executeUnprepared("COMMIT", [], undefined), exit.value)
                  : Effect.zipRight(Effect.ignore(conn.executeUnprepared("ROLLBACK", [], undefined)), exit))
            )
          )
        return {
          readAfter: (after, limit) =>
            onConn(sql.unsafe<LoggedRow>(q.readAfter, [after.txId.toString(), after.sequence, limit])).pipe(
              Effect.map((rows) =>
                rows.map((row): Storage.LoggedEvent => ({
                  ...toStored(row.stream_id, row),
                  streamType: row.stream_type,
                  txId: BigInt(row.tx_id)
                }))
              ),
              Effect.mapError(wrap(`Reading events for projection ${ref.name} failed`))
            ),
          readDocuments: (refs) => onConn(readDocuments(refs)),
          progress: onConn(progressOf(ref)),
          store: (writes, progress) =>
            inTransaction(Effect.gen(function*() {
              if (writes.length > 0) yield* sql.unsafe(q.upsertDocuments, writeArrays(writes))
              yield* sql.unsafe(q.saveProgress, [
                ref.name,
                ref.version,
                progress.checkpoint.txId.toString(),
                progress.checkpoint.sequence,
                progress.processed
              ])
            })).pipe(Effect.mapError(wrap(`Storing projection ${ref.name} failed`))),
          reset: inTransaction(Effect.zipRight(
            sql.unsafe(q.deleteDocuments, [ref.name, ref.version]),
            sql.unsafe(q.deleteProgress, [ref.name, ref.version])
          )).pipe(Effect.mapError(wrap(`Resetting projection ${ref.name} failed`)))
        } satisfies Storage.ProjectionWorker
      }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap(`Claiming projection ${ref.name} failed`)(e)))

    const pg = yield* Effect.serviceOption(PgClient.PgClient)
    const projections: Storage.ProjectionStorage = {
      claim,
      progress: progressOf,
      head: sql.unsafe<{ tx_id: string; seq: string }>(q.head).pipe(
        Effect.map((rows) =>
          rows.length === 0
            ? { checkpoint: Storage.origin, sequence: 0 }
            : { checkpoint: checkpointOf(rows[0]), sequence: Number(rows[0].seq) }
        ),
        Effect.mapError(wrap("Reading the head of the log failed"))
      ),
      countAfter: (after) =>
        sql.unsafe<{ n: string }>(q.countAfter, [after.txId.toString(), after.sequence]).pipe(
          Effect.map((rows) => Number(rows[0].n)),
          Effect.mapError(wrap("Counting events failed"))
        ),
      // LISTEN when the client can (PgClient); readers poll as well, so a lost notification only delays them.
      changes: Option.match(pg, {
        onNone: () => Stream.never,
        onSome: (client) =>
          Stream.unwrapScoped(Effect.gen(function*() {
            // Registered while listening, so that stores start notifying; the
            // registration expires by itself if this process dies.
            const id = `${process.pid}-${Math.random().toString(36).slice(2)}`
            yield* Effect.forkScoped(Effect.repeat(Effect.ignore(sql.unsafe(q.register, [id])), Schedule.spaced("10 seconds")))
            yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe(q.unregister, [id])))
            return client.listen(channel).pipe(
              Stream.as(undefined as void),
              Stream.retry(Schedule.spaced("1 second")),
              Stream.catchAll(() => Stream.never)
            )
          }))
      })
    }

    const joined = Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)
    const storage: Storage.Storage = { readStream, loadSnapshot, readDocuments, commit, begin, joined, projections }
    inFlightOf.set(storage, () => ({ reads: reads.combiner.inFlight, saves: saves.combiner.inFlight, queued: reads.combiner.queue.length + saves.combiner.queue.length }))
    return storage
  })
