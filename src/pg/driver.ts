/**
 * The driver plumbing of the PostgreSQL storage, and the only module of `src/`
 * that reaches into private internals of `@effect/sql`, `@effect/sql-pg` and
 * node-postgres: a statement's `acquirer` (the pool-level connection), its
 * `runWithClient`, a statement's `spanAttributes`, a connection's `pg` client, named statements passed to
 * `executeRaw` as `{ name, text } as unknown as string`, the results of a
 * multi-statement `executeUnprepared`, and on a node-postgres client its
 * `Query` class, `processID`, `_queryable` and `_ending`, and its connection's
 * `errorMessage` events. The guard test in test/pg-specific.test.ts ("statements
 * run prepared on @effect/sql-pg's pool-level connection") fails when an upgrade
 * moves them.
 *
 * The other modules see a small surface: `prepared` statements, `reserve`, and
 * what a failure tells (`sentAndLost`). A port to Effect 4, whose SQL packages
 * are rewritten, changes this module: the rest speaks only `SqlClient`.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Pg from "pg"
import { EventStoreError } from "../Errors.js"
import * as LeanFiber from "../internal/fiber.js"
import * as Tracing from "../internal/tracing.js"
import { outcomeUnknown } from "./failures.js"
import * as Spans from "./spans.js"

/**
 * The pool-level connection of `@effect/sql-pg`, reached through a
 * statement's acquirer: each statement on it borrows a client from the pool
 * for just that statement, without a Scope (reserving one through
 * `sql.reserve` costs more Node CPU than a save itself), and its `executeRaw`
 * hands the query to node-postgres as given, so a named query config runs
 * prepared. Undefined with another driver: saves then reserve a connection.
 *
 * @internal
 */
export const poolConnectionOf = (sql: SqlClient.SqlClient): Effect.Effect<SqlConnection.Connection | undefined> =>
  Effect.sync(() => (sql.unsafe("SELECT 1") as unknown as { readonly acquirer?: unknown }).acquirer).pipe(
    Effect.flatMap((acquirer) =>
      Effect.isEffect(acquirer) ? (acquirer as Effect.Effect<SqlConnection.Connection, unknown>) : Effect.succeed(undefined)
    ),
    // Outside any transaction the acquirer gives the pool's connection.
    Effect.mapInputContext((ctx: Context.Context<never>) => Context.omit(SqlClient.TransactionConnection)(ctx)),
    Effect.map((conn) =>
      conn !== undefined && (conn as { pg?: unknown }).pg === undefined && typeof conn.executeRaw === "function" &&
        "pg" in conn
        ? conn
        : undefined
    ),
    Effect.orElseSucceed(() => undefined)
  )

// node-postgres copies a plain query config through property descriptors (~6 us);
// a Query built from the text skips that, and carries the statement's name. Only
// where we call client.query ourselves, with the callback second (every version takes that).
type QueryClass = new(text: string, values: ReadonlyArray<unknown>) => { name?: string }
const queryClassOf = (client: Pg.PoolClient): QueryClass | undefined =>
  (client.constructor as { Query?: QueryClass } | undefined)?.Query
const statementFor = (Query: QueryClass | undefined, name: string, text: string, values: ReadonlyArray<unknown>) => {
  if (typeof Query !== "function") return { name, text, values }
  const query = new Query(text, values)
  query.name = name
  return query
}

// @effect/sql-pg's pool-level connection borrows a client for one statement
// and gives it to `f` (and takes it back, and cancels the statement on
// interruption); without that method, its executeRaw.
type WithClient = <A>(f: (client: Pg.PoolClient, resume: (effect: Effect.Effect<A, SqlError>) => void) => void) => Effect.Effect<A, SqlError>
const withClientOf = (conn: SqlConnection.Connection): WithClient | undefined => {
  const run = (conn as { runWithClient?: unknown }).runWithClient
  return typeof run === "function" ? (run as WithClient).bind(conn) : undefined
}

/**
 * The driver of one store: its client, the pool-level connection, and what it
 * knows of the node-postgres clients its statements ran on.
 *
 * @since 0.1.0
 */
export interface Driver {
  readonly sql: SqlClient.SqlClient
  readonly runtime: Runtime.Runtime<never>
  readonly pool: SqlConnection.Connection | undefined
  readonly poolWithClient: WithClient | undefined
  /** The names of the statements that only read: run again whatever broke. */
  readonly reads: ReadonlySet<string>
  /** Clients whose backend sent its FATAL, or that were ended. */
  readonly terminated: WeakSet<Pg.PoolClient>
  readonly watched: WeakSet<Pg.PoolClient>
  /**
   * Failures of statements that were never sent: no client (the pool could
   * not connect), or a client found dead before sending.
   */
  readonly unsent: WeakSet<SqlError>
  /** A connection for the scope, as `reserveOf` tells. */
  readonly reserve: Effect.Effect<SqlConnection.Connection, EventStoreError, Scope.Scope>
  /** What the client's own statement spans carry (`db.system.name`, `db.namespace`, the server). */
  readonly spanAttributes: Readonly<Record<string, unknown>>
}

/**
 * The driver over `sql`, whose statements named in `reads` only read.
 *
 * @since 0.1.0
 */
export const make = (sql: SqlClient.SqlClient, reads: ReadonlyArray<string>): Effect.Effect<Driver> =>
  Effect.gen(function*() {
    const pool = yield* poolConnectionOf(sql)
    const runtime = yield* Effect.runtime<never>()
    const clients = { terminated: new WeakSet<Pg.PoolClient>(), watched: new WeakSet<Pg.PoolClient>() }
    return {
      sql,
      runtime,
      pool,
      poolWithClient: pool === undefined ? undefined : withClientOf(pool),
      reads: new Set(reads),
      ...clients,
      unsent: new WeakSet<SqlError>(),
      reserve: reserveOf(sql, runtime, clients),
      spanAttributes: spanAttributesOf(sql)
    }
  })

// The attributes @effect/sql puts on its statement spans, from a statement
// of the client (another driver's may carry none: then ours name PostgreSQL).
const spanAttributesOf = (sql: SqlClient.SqlClient): Record<string, unknown> => {
  const given = (sql.unsafe("SELECT 1") as unknown as { readonly spanAttributes?: unknown }).spanAttributes
  const attributes: Record<string, unknown> = Array.isArray(given)
    ? Object.fromEntries(given.filter((entry): entry is [string, unknown] => Array.isArray(entry) && typeof entry[0] === "string"))
    : {}
  attributes["db.system.name"] = "postgresql"
  return attributes
}

// The hot statements go out as named prepared statements on the
// connection's node-postgres client: parsed and planned once per
// connection instead of on every save (@effect/sql-pg sends every
// statement unnamed).
const clientOf = (conn: SqlConnection.Connection): Pg.PoolClient | undefined => (conn as { pg?: Pg.PoolClient }).pg

// Broken connections. A backend that is terminated (pg_terminate_backend,
// a shutdown) sends a FATAL error and exits; node-postgres hands that error
// to the statement in flight as its answer, and the pool takes the client
// back as healthy (@effect/sql-pg releases it without an error) until the
// socket's end is read, later. The next statement handed that client fails
// with "Connection terminated unexpectedly". So every client our statements
// run on is watched for its backend's FATAL (before node-postgres delivers
// it), a dead client is never sent a statement, and a client whose
// connection broke is ended before it goes back, so the pool drops it.
interface Clients {
  readonly terminated: WeakSet<Pg.PoolClient>
  readonly watched: WeakSet<Pg.PoolClient>
}
const watch = (clients: Clients, client: Pg.PoolClient) => {
  if (clients.watched.has(client)) return
  clients.watched.add(client)
  const connection = (client as unknown as { connection?: { prependListener?: (event: string, f: (msg: { severity?: string }) => void) => void } })
    .connection
  connection?.prependListener?.("errorMessage", (msg) => {
    if (msg.severity === "FATAL" || msg.severity === "PANIC") clients.terminated.add(client)
  })
}
// pg-pool reads these same two fields to decide whether a released client is reusable.
const dead = (clients: Clients, client: Pg.PoolClient) => {
  const state = client as unknown as { _queryable?: boolean; _ending?: boolean }
  return clients.terminated.has(client) || state._queryable === false || state._ending === true
}
const evict = (clients: Clients, client: Pg.PoolClient) => {
  clients.terminated.add(client)
  if ((client as unknown as { _ending?: boolean })._ending === true) return
  // Marks the client as ending at once, so that its release removes it from the pool.
  client.end().catch(() => {})
}
// An error of the connection rather than of the statement: anything that is
// not an ordinary error answer (a DatabaseError has a severity), a FATAL
// answer, or a connection class SQLSTATE.
const brokenBy = (error: unknown) => {
  const e = error as { severity?: unknown; code?: unknown } | null
  if (e === null || typeof e !== "object" || typeof e.severity !== "string") return true
  const code = typeof e.code === "string" ? e.code : ""
  return e.severity === "FATAL" || e.severity === "PANIC" || code.startsWith("08") || code.startsWith("57P")
}
// Proof that a failed statement never ran, so that running it again on
// another connection cannot write twice:
// - 57P01 as the answer: the backend was terminated (pg_terminate_backend,
//   a shutdown, its postmaster's death) before or while it ran the
//   statement. PostgreSQL acts on a termination only where interrupts are
//   allowed: never between writing a commit record and sending the answer
//   (the commit holds interrupts, and the ReadyForQuery that follows is
//   flushed before the backend next checks; a termination while it is
//   blocked sending drops the message, so the client sees only the
//   connection close). So a statement answered with 57P01 was rolled back
//   with its implicit transaction, or never read. (57P02, crash shutdown,
//   comes from a signal handler that can fire after a commit: no proof.)
// - node-postgres refused it without sending it (the client had ended).
// - the client had already received its backend's FATAL when the statement
//   would have been sent (the backend exits right after that message): it
//   is then not sent at all (`NotSent`).
const refusedLocally = /^Client (has encountered a connection error|was closed) and is not queryable$/
const neverRan = (error: unknown) => {
  const e = error as { code?: unknown; message?: unknown } | null
  return e !== null && typeof e === "object" &&
    (e.code === "57P01" || (typeof e.message === "string" && refusedLocally.test(e.message)))
}
class NotSent extends Error {
  constructor() {
    super("The connection's backend had ended: the statement was not sent")
  }
}

/**
 * Whether a failed statement was sent and its connection broke before it was
 * known not to have run: a write's outcome is then unknown.
 *
 * @since 0.1.0
 */
export const sentAndLost = (error: SqlError) => brokenBy(error.cause) && !neverRan(error.cause)

const queryOn = <A>(driver: Driver, client: Pg.PoolClient, name: string, text: string, values: ReadonlyArray<unknown>) =>
  Effect.async<ReadonlyArray<A>, SqlError>((resume) => {
    watch(driver, client)
    client.query(statementFor(queryClassOf(client), name, text, values) as Pg.QueryConfig, (error: Error | null, result: Pg.QueryResult) => {
      if (error) {
        if (brokenBy(error)) evict(driver, client)
        resume(Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" })))
      } else resume(Effect.succeed(result.rows as ReadonlyArray<A>))
    })
    // Interruption cancels the statement from another connection, as
    // @effect/sql-pg does; never from a transaction's own, which is busy.
    return driver.sql.unsafe(`SELECT pg_cancel_backend($1)`, [(client as unknown as { processID: number }).processID]).pipe(
      Effect.mapInputContext((ctx: Context.Context<never>) => Context.omit(SqlClient.TransactionConnection)(ctx)),
      Effect.timeoutOption("5 seconds"),
      Effect.ignore
    )
  })

// The statement on the pool, and whether it was sent (a failure before is one that never ran).
const onPoolOnce = <A>(
  driver: Driver,
  conn: SqlConnection.Connection,
  name: string,
  text: string,
  values: ReadonlyArray<unknown>,
  attempt: { sent: boolean }
): Effect.Effect<ReadonlyArray<A>, SqlError> => {
  const withClient = conn === driver.pool ? driver.poolWithClient : withClientOf(conn)
  // A plain config here, not a Query: @effect/sql-pg passes its callback as the
  // third argument, which node-postgres before 8.19 ignores for Query objects.
  if (withClient === undefined) {
    // Whether it was sent is unknown here, but for a client the pool could not give.
    attempt.sent = true
    return Effect.map(
      conn.executeRaw({ name, text } as unknown as string, values),
      (result) => (result as Pg.QueryResult).rows as ReadonlyArray<A>
    ).pipe(Effect.tapError((error) =>
      Effect.sync(() => {
        if (error.message === "Failed to acquire connection") driver.unsent.add(error)
      })
    ))
  }
  return withClient<ReadonlyArray<A>>((client, resume) => {
    watch(driver, client)
    if (dead(driver, client)) {
      evict(driver, client)
      return resume(Effect.fail(new SqlError({ cause: new NotSent(), message: "Failed to execute statement" })))
    }
    attempt.sent = true
    client.query(statementFor(queryClassOf(client), name, text, values) as Pg.QueryConfig, (error: Error | null, result: Pg.QueryResult) => {
      if (error) {
        // Ended before it goes back to the pool (the release follows `resume`).
        if (brokenBy(error)) evict(driver, client)
        resume(Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" })))
      } else resume(Effect.succeed(result.rows as ReadonlyArray<A>))
    })
  })
}

// Gives the event loop a turn, in which the sockets of other backends that
// died are read and the pool drops their clients.
const nextTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

// Outside a transaction a statement that failed with its connection is run
// again on another one: a read whatever the failure (reading twice is
// harmless), a write only when the failure proves it never ran (not sent,
// or `neverRan` above), since a write whose answer was lost may have
// committed: that one fails, saying that its outcome is unknown. A few
// tries, because when every backend of the pool was killed at once the
// next client the pool hands out may be dying too.
const maxTries = 3
const onPool = <A>(driver: Driver, conn: SqlConnection.Connection, name: string, text: string, values: ReadonlyArray<unknown>) => {
  const read = driver.reads.has(name)
  const attempt = (tries: number): Effect.Effect<ReadonlyArray<A>, SqlError> => {
    const sent = { sent: false }
    return Effect.catchAll(onPoolOnce<A>(driver, conn, name, text, values, sent), (error) => {
      if (!sent.sent) driver.unsent.add(error)
      const notRun = driver.unsent.has(error) || neverRan(error.cause)
      if (tries < maxTries && (notRun || (read && brokenBy(error.cause)))) return Effect.zipRight(nextTurn, attempt(tries + 1))
      if (!read && !notRun && brokenBy(error.cause)) outcomeUnknown.add(error)
      return Effect.fail(error)
    })
  }
  return attempt(1)
}

/**
 * Runs a statement as a named prepared statement: on the transaction's
 * connection inside one, else on the pool-level connection (or a connection
 * reserved for it, with another driver).
 *
 * @since 0.1.0
 */
export const prepared = <A extends object>(driver: Driver, name: string, text: string, values: ReadonlyArray<unknown>) =>
  // One step to choose the connection (and whether a span is wanted), then the statement's own.
  Effect.withFiberRuntime<ReadonlyArray<A>, SqlError>((fiber) =>
    Tracing.records(fiber.currentTracer)
      ? Spans.statementSpan(driver, () => Spans.statementOf(name), text, Effect.withFiberRuntime((fiber) => on<A>(driver, fiber, name, text, values)))
      : on<A>(driver, fiber, name, text, values)
  )

const on = <A extends object>(driver: Driver, fiber: Fiber.RuntimeFiber<any, any>, name: string, text: string, values: ReadonlyArray<unknown>) => {
  const tx = Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)
  if (Option.isSome(tx)) {
    const client = clientOf(tx.value[0])
    return client === undefined ? driver.sql.unsafe<A>(text, values as Array<unknown>) : queryOn<A>(driver, client, name, text, values)
  }
  if (driver.pool !== undefined) return onPool<A>(driver, driver.pool, name, text, values)
  return Effect.scoped(Effect.flatMap(driver.sql.reserve, (conn) => {
    const client = clientOf(conn)
    return client === undefined ? driver.sql.unsafe<A>(text, values as Array<unknown>) : queryOn<A>(driver, client, name, text, values)
  }))
}

/**
 * Runs several statements in one round trip, without parameters: the results
 * of each, in order.
 *
 * @since 0.1.0
 */
export const unpreparedResults = <A>(conn: SqlConnection.Connection, text: string) =>
  conn.executeUnprepared(text, [], undefined) as unknown as Effect.Effect<ReadonlyArray<ReadonlyArray<A>>, SqlError>

// A reserved connection whose backend sent its FATAL (to any statement on
// it) is ended before @effect/sql-pg gives it back (finalizers run last
// first), so the pool drops it.
const watchReserved = (clients: Clients, scope: Scope.Scope) => (conn: SqlConnection.Connection) => {
  const client = clientOf(conn)
  if (client === undefined) return Effect.void
  watch(clients, client)
  return Scope.addFinalizer(scope, Effect.sync(() => {
    if (dead(clients, client)) evict(clients, client)
  }))
}

// @effect/sql-pg's reserve waits for a pool connection uninterruptibly, and
// a connection it gets for a waiter that was interrupted is never given
// back. So the reservation runs in a fiber of its own, into a scope of its
// own that the caller's scope closes: a waiter interrupted while it waits
// returns at once, and a connection that arrives after that is given back
// the moment it arrives (a finalizer added to a closed scope runs at once).
const reserveOf = (
  sql: SqlClient.SqlClient,
  runtime: Runtime.Runtime<never>,
  clients: Clients
): Effect.Effect<SqlConnection.Connection, EventStoreError, Scope.Scope> =>
  Effect.flatMap(
    Effect.scope,
    (outer) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Scope.make(), (inner) =>
          Effect.zipRight(
            Scope.addFinalizer(outer, Scope.close(inner, Exit.void)),
            restore(Effect.async<SqlConnection.Connection, EventStoreError>((resume) => {
              Runtime.runCallback(runtime)(LeanFiber.provideService(Effect.tap(sql.reserve, watchReserved(clients, inner)), Scope.Scope, inner), {
                onExit: (exit) =>
                  resume(exit._tag === "Success" ? Effect.succeed(exit.value) : Effect.fail(
                    new EventStoreError({ message: "Reserving a connection failed", cause: Cause.squash(exit.cause) })
                  ))
              })
              return Scope.close(inner, Exit.void)
            }))
          ))
      )
  )
