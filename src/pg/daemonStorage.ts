/**
 * The storage of projection daemons over PostgreSQL: leadership of a
 * projection (a session advisory lock), the log read in commit order from a
 * checkpoint, documents and progress stored together, and the notifications
 * that wake daemons up.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as RcRef from "effect/RcRef"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventStoreError } from "../Errors.js"
import * as Storage from "../Storage.js"
import * as Spans from "./spans.js"
import { wrap } from "./failures.js"
import { readDocuments } from "./reads.js"
import { checkpointOf, type LoggedRow, toStored, writeArrays } from "./rows.js"
import type { Statements } from "./statements.js"
import type { Store } from "./store.js"

/**
 * Whether some projection daemon listens, refreshed every second for the
 * scope. pg_notify makes commits queue on a cluster-wide lock, so appends
 * notify only while some daemon listens (it registers in the listeners
 * table); daemons poll as well, which covers the second it takes to notice.
 *
 * @since 0.1.0
 */
export const watchListeners = (sql: SqlClient.SqlClient, q: Statements): Effect.Effect<{ listening: boolean }, never, Scope.Scope> =>
  Effect.gen(function*() {
    const listeners = { listening: false }
    const refreshListening = Spans.query<{ listening: boolean }>({ sql, q }, "listening").pipe(
      Effect.map((rows) => {
        listeners.listening = rows[0]?.listening === true
      }),
      Effect.ignore
    )
    yield* refreshListening
    yield* Effect.forkScoped(Effect.repeat(refreshListening, Schedule.spaced("1 second")))
    return listeners
  })

const progressOf = (store: Store, ref: Storage.ProjectionRef) =>
  Spans.query<{ tx_id: string; seq: string; processed: string; error: string | null }>(store, "progress", [ref.name, ref.version]).pipe(
    Effect.map((rows): Storage.Progress =>
      rows.length === 0
        ? { checkpoint: Storage.origin, processed: 0 }
        : { checkpoint: checkpointOf(rows[0]), processed: Number(rows[0].processed), error: rows[0].error ?? undefined }
    ),
    Effect.mapError(wrap(`Reading the progress of projection ${ref.name} failed`))
  )

const loggedOf = (row: LoggedRow & { readonly archived?: boolean }): Storage.LoggedEvent => ({
  ...toStored(row.stream_id, row),
  streamType: row.stream_type,
  txId: BigInt(row.tx_id),
  archived: row.archived === true
})

// The advisory lock keys of a projection's leadership and of a takeover waiting for it.
const keysOf = (store: Store, ref: Storage.ProjectionRef) => ({
  leader: [`effect-chronicle:${store.schema}`, `${ref.name}@${ref.version}`] as const,
  takeover: [`effect-chronicle-takeover:${store.schema}`, `${ref.name}@${ref.version}`] as const
})

const deadLetterParams = (ref: Storage.ProjectionRef, letter: Storage.DeadLetter) => {
  const e = letter.event
  return [
    ref.name, e.sequence, e.txId.toString(), e.streamId, e.version, e.type, e.streamType, JSON.stringify(e.data),
    JSON.stringify(e.metadata), e.timestamp.getTime(), e.tenantId, letter.error, letter.at.getTime()
  ]
}

// The leader's operations, all on its reserved connection: if it dies, so
// does the lock, and the leader's next statement fails instead of writing as a zombie.
const workerOn = (store: Store, conn: SqlConnection.Connection, ref: Storage.ProjectionRef): Storage.ProjectionWorker => {
  const onConn = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0] as const)
  const inTransaction = <A>(effect: Effect.Effect<A, SqlError>) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(
        Spans.unprepared(store.driver, conn, "BEGIN"),
        Effect.flatMap(Effect.exit(restore(onConn(effect))), (exit) =>
          exit._tag === "Success"
            ? Effect.as(Spans.unprepared(store.driver, conn, "COMMIT"), exit.value)
            : Effect.zipRight(Effect.ignore(Spans.unprepared(store.driver, conn, "ROLLBACK")), exit))
      )
    )
  const { takeover } = keysOf(store, ref)
  return {
    readAfter: (after, limit) =>
      onConn(Spans.query<LoggedRow>(store, "readAfter", [after.txId.toString(), after.sequence, limit])).pipe(
        Effect.map((rows) => rows.map(loggedOf)),
        Effect.mapError(wrap(`Reading events for projection ${ref.name} failed`))
      ),
    readDocuments: (refs) => onConn(readDocuments(store, refs)),
    progress: onConn(progressOf(store, ref)),
    store: (writes, progress, deadLetters) =>
      inTransaction(Effect.gen(function*() {
        if (writes.length > 0) yield* Spans.query(store, "upsertDocuments", writeArrays(writes))
        for (const letter of deadLetters ?? []) yield* Spans.query(store, "deadLetter", deadLetterParams(ref, letter))
        yield* Spans.query(store, "saveProgress", [
          ref.name,
          ref.version,
          progress.checkpoint.txId.toString(),
          progress.checkpoint.sequence,
          progress.processed,
          progress.error ?? null
        ])
      })).pipe(Effect.mapError(wrap(`Storing projection ${ref.name} failed`))),
    asked: onConn(Spans.query<{ asked: boolean }>(store, "asked", takeover)).pipe(
      Effect.map((rows) => rows[0].asked),
      Effect.mapError(wrap(`Reading the leadership of projection ${ref.name} failed`))
    ),
    reset: inTransaction(Effect.zipRight(
      Spans.query(store, "deleteDocuments", [ref.name, ref.version]),
      Spans.query(store, "deleteProgress", [ref.name, ref.version])
    )).pipe(Effect.mapError(wrap(`Resetting projection ${ref.name} failed`)))
  }
}

const onConnection = (conn: SqlConnection.Connection) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0] as const)

// Tries `statement` (a try-lock) until it says the lock was had, every `interval`; the lock is then
// held until the scope ends. The lock and its release are registered as one step, so that an
// interruption cannot leave the lock on a connection that goes back to the pool.
const hold = (
  store: Store,
  conn: SqlConnection.Connection,
  statement: string,
  params: ReadonlyArray<string>,
  unlock: readonly [string, string],
  interval: Duration.DurationInput
): Effect.Effect<void, SqlError, Scope.Scope> => {
  const onConn = onConnection(conn)
  // A try-lock does not wait: it runs uninterruptibly; the waits between tries are interruptible.
  const once: Effect.Effect<boolean, SqlError, Scope.Scope> = Effect.uninterruptible(
    Effect.flatMap(onConn(store.sql.unsafe<{ ok: boolean }>(statement, params)), (rows) =>
      rows[0].ok
        ? Effect.as(Effect.addFinalizer(() => Effect.ignore(onConn(Spans.query(store, "unlock", unlock)))), true)
        : Effect.succeed(false))
  )
  return Effect.asVoid(Effect.repeat(once, { until: (ok) => ok, schedule: Schedule.spaced(interval) }))
}

// A connection holding the lock that `statement` tries: reserved for each try and given back
// when the lock is not had, so a waiting follower holds no connection of the pool.
const reserveHolding = (
  store: Store,
  statement: string,
  params: ReadonlyArray<string>,
  unlock: readonly [string, string],
  interval: Duration.DurationInput
): Effect.Effect<SqlConnection.Connection, SqlError | EventStoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    while (true) {
      const attempt = yield* Scope.fork(outer, ExecutionStrategy.sequential)
      const had = yield* Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          // Waiting for a pool connection can be interrupted; the try-lock, which does not wait, cannot.
          Effect.exit(Scope.extend(
            Effect.flatMap(restore(store.driver.reserve), (conn) =>
              Effect.map(
                onConnection(conn)(store.sql.unsafe<{ ok: boolean }>(statement, params)),
                (rows) => rows[0].ok ? conn : undefined
              )),
            attempt
          )),
          (exit) => {
            if (exit._tag === "Success" && exit.value !== undefined) {
              const conn = exit.value
              // Unlocked before the connection goes back (the attempt's scope closes with the outer one).
              return Effect.as(
                Scope.addFinalizer(attempt, Effect.ignore(onConnection(conn)(Spans.query(store, "unlock", unlock)))),
                conn
              )
            }
            return Effect.zipRight(Scope.close(attempt, Exit.void), exit._tag === "Success" ? Effect.succeed(undefined) : exit)
          }
        )
      )
      if (had !== undefined) return had
      yield* Effect.sleep(interval)
    }
  })

const claimFailed = (ref: Storage.ProjectionRef) => (e: unknown) =>
  e instanceof EventStoreError ? e : wrap(`Claiming projection ${ref.name} failed`)(e as SqlError)

// Leadership is a session advisory lock on a reserved connection. A claim
// gives way while a takeover waits for it.
const claim = (store: Store, claimInterval: Duration.DurationInput, ref: Storage.ProjectionRef) =>
  Effect.gen(function*() {
    const { leader, takeover } = keysOf(store, ref)
    const conn = yield* reserveHolding(store, store.q.tryLockGivingWay, [leader[0], leader[1], takeover[0]], leader, claimInterval)
    return workerOn(store, conn, ref)
  }).pipe(Effect.mapError(claimFailed(ref)))

// A takeover first holds the takeover lock (so claims give way and the
// leader is asked), wakes idle leaders, then waits for the leadership itself
// on the same connection.
const takeOver = (store: Store, claimInterval: Duration.DurationInput, ref: Storage.ProjectionRef) =>
  Effect.gen(function*() {
    const { leader, takeover } = keysOf(store, ref)
    const conn = yield* reserveHolding(store, store.q.tryLock, takeover, takeover, claimInterval)
    yield* Spans.query(store, "wake", [store.channel])
    yield* hold(store, conn, store.q.tryLock, leader, leader, claimInterval)
    return workerOn(store, conn, ref)
  }).pipe(Effect.mapError(claimFailed(ref)))

// One LISTEN per store, shared by every reader of `changes` in this process (a daemon's workers, live
// readAll streams): @effect/sql-pg runs UNLISTEN when any one listen stream ends, which would deafen
// the others. It starts with its first reader and stops after its last; while it runs this process is
// registered as a listener, so that commits notify.
const sharedListen = (store: Store, client: PgClient.PgClient) =>
  RcRef.make({
    acquire: Effect.gen(function*() {
      const ticks = yield* PubSub.sliding<void>(1)
      const id = `${process.pid}-${Math.random().toString(36).slice(2)}`
      const register = Effect.ignore(Spans.query(store, "register", [id]))
      yield* register
      // This process's own commits notify from now on; other processes see the registration within a second.
      store.listeners.listening = true
      yield* Effect.forkScoped(Effect.repeat(Effect.zipRight(Effect.sleep("10 seconds"), register), Schedule.forever))
      yield* Effect.addFinalizer(() => Effect.ignore(Spans.query(store, "unregister", [id])))
      yield* Effect.forkScoped(client.listen(store.channel).pipe(
        Stream.retry(Schedule.spaced("1 second")),
        Stream.runForEach(() => PubSub.publish(ticks, undefined)),
        Effect.ignore
      ))
      return ticks
    })
  })

/**
 * The projection storage of a store: a daemon that does not lead a
 * projection tries to take it over every `claimInterval`.
 *
 * @since 0.1.0
 */
export const make = (store: Store, claimInterval: Duration.DurationInput): Effect.Effect<Storage.ProjectionStorage, never, Scope.Scope> =>
  Effect.flatMap(Effect.serviceOption(PgClient.PgClient), (pg) =>
    Effect.map(Effect.transposeOption(Option.map(pg, (client) => sharedListen(store, client))), (listening) => ({
    claim: (ref) => claim(store, claimInterval, ref),
    takeOver: (ref) => takeOver(store, claimInterval, ref),
    progress: (ref) => progressOf(store, ref),
    readLog: (after, limit, filter) =>
      Spans.query<LoggedRow & { scanned: string | null }>(store, "readLog", [
        after.txId.toString(),
        after.sequence,
        limit,
        filter.tenantId ?? null,
        filter.types ?? null,
        filter.streamTypes ?? null,
        filter.includeArchived === true
      ]).pipe(
        Effect.map((rows): Storage.LogPage => {
          // The last row, when the page looked at any event, says where it ended and how many it looked at.
          const last = rows[rows.length - 1]
          if (last === undefined || last.scanned === null) return { events: [], end: after, scanned: 0 }
          return { events: rows.slice(0, -1).map(loggedOf), end: checkpointOf(last), scanned: Number(last.scanned) }
        }),
        Effect.mapError(wrap("Reading the log failed"))
      ),
    settled: (checkpoint) =>
      Spans.query<{ settled: boolean }>(store, "settled", [checkpoint.txId.toString()]).pipe(
        Effect.map((rows) => rows[0].settled),
        Effect.mapError(wrap("Reading the log's horizon failed"))
      ),
    deadLetters: (ref) =>
      Spans.query<LoggedRow & { error: string; at: number }>(store, "deadLetters", [ref.name]).pipe(
        Effect.map((rows) => rows.map((row): Storage.DeadLetter => ({ event: loggedOf(row), error: row.error, at: new Date(row.at) }))),
        Effect.mapError(wrap(`Reading the dead letters of ${ref.name} failed`))
      ),
    head: Spans.query<{ tx_id: string; seq: string }>(store, "head").pipe(
      Effect.map((rows) =>
        rows.length === 0
          ? { checkpoint: Storage.origin, sequence: 0 }
          : { checkpoint: checkpointOf(rows[0]), sequence: Number(rows[0].seq) }
      ),
      Effect.mapError(wrap("Reading the head of the log failed"))
    ),
    countAfter: (after) =>
      Spans.query<{ n: string }>(store, "countAfter", [after.txId.toString(), after.sequence]).pipe(
        Effect.map((rows) => Number(rows[0].n)),
        Effect.mapError(wrap("Counting events failed"))
      ),
    // LISTEN when the client can (PgClient); readers poll as well, so a lost notification only delays them.
    changes: Option.match(listening, {
      onNone: () => Stream.never,
      onSome: (ref) => Stream.unwrapScoped(Effect.map(RcRef.get(ref), (ticks) => Stream.fromPubSub(ticks)))
    })
  } satisfies Storage.ProjectionStorage)))
