/**
 * PostgreSQL under faults: connections waited for and interrupted, backends
 * killed mid-operation. Counted afterwards in pg_stat_activity by the pool's
 * application_name.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { inject } from "vitest"
import { EventStorePg, Projections, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated } from "../examples/order.js"
import { newId } from "./support.js"

const created = () => new OrderCreated({ items: [new Item({ name: "a", ready: false })] })

const schemaName = () => `chronicle_faults_${Math.random().toString(36).slice(2, 10)}`

/** A store on a pool of its own, named so that its backends can be counted and killed. */
const storeOn = (schema: string, applicationName: string, maxConnections: number) =>
  EventStorePg.layer({ schema }).pipe(
    Layer.provideMerge(Projections.layer([])),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), maxConnections, applicationName }))
  )

/** A separate client for looking at (and killing) the store's backends. */
const Admin = PgClient.layer({ url: Redacted.make(inject("databaseUrl")), maxConnections: 2 })

const backendsOf = (applicationName: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql.unsafe<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1`, [applicationName]),
      (rows) => Number(rows[0].n)
    ))

const dropSchema = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.ignore(sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)))

/** Waits until no backend of the pool is left (the pool ends its clients asynchronously). */
const settled = (applicationName: string) =>
  backendsOf(applicationName).pipe(
    Effect.repeat({ until: (n) => n === 0, schedule: Schedule.spaced("50 millis"), times: 100 }),
    Effect.flatMap(() => backendsOf(applicationName))
  )

const holdLock = (id: string) =>
  Effect.flatMap(Session.fetchForExclusiveWriting(Order, id), () => Effect.never)

describe("PostgreSQL faults: connections", () => {
  it.live("exclusive fetches interrupted while they wait for a pool connection leak none (pool of 2)", () =>
    Effect.gen(function*() {
      const schema = schemaName()
      const app = newId("chronicle-faults")
      const outcome = yield* Effect.gen(function*() {
        const ids = [newId("order"), newId("order")]
        // Both connections of the pool are held by sessions that locked a stream.
        const holders = yield* Effect.forEach(ids, (id) => Effect.fork(Session.run(holdLock(id))))
        yield* Effect.sleep(300)
        const waiters = yield* Effect.forEach([1, 2, 3, 4], () =>
          Effect.fork(Session.run(Session.fetchForExclusiveWriting(Order, newId("order")))))
        yield* Effect.sleep(100)
        const started = Date.now()
        yield* Effect.forEach(waiters, Fiber.interrupt)
        const interruptMillis = Date.now() - started
        yield* Effect.forEach(holders, Fiber.interrupt)
        // Later saves get connections: none was kept by an interrupted waiter.
        const saved = yield* Effect.forEach([1, 2, 3, 4], () =>
          Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, newId("order"))
            yield* stream.appendOne(created())
            return yield* Session.saveChanges
          })).pipe(Effect.timeout("5 seconds")), { concurrency: "unbounded" })
        return { interruptMillis, saved: saved.length }
      }).pipe(Effect.provide(storeOn(schema, app, 2)))
      assert.isBelow(outcome.interruptMillis, 1000)
      assert.strictEqual(outcome.saved, 4)
      // Once the layer is closed, no connection of its pool is left open.
      assert.strictEqual(yield* settled(app), 0)
      yield* dropSchema(schema)
    }).pipe(Effect.provide(Admin)))

  it.live("a multi-stream save waiting for a pool connection returns at once when interrupted", () =>
    Effect.gen(function*() {
      const schema = schemaName()
      const app = newId("chronicle-faults")
      const interruptMillis = yield* Effect.gen(function*() {
        const holders = yield* Effect.forEach([newId("order"), newId("order")], (id) => Effect.fork(Session.run(holdLock(id))))
        yield* Effect.sleep(300)
        const save = yield* Effect.fork(Session.run(Effect.gen(function*() {
          yield* Session.append(Order, newId("order"), [created()])
          yield* Session.append(Order, newId("order"), [created()])
          return yield* Session.saveChanges
        })))
        yield* Effect.sleep(200)
        const started = Date.now()
        yield* Fiber.interrupt(save)
        const took = Date.now() - started
        yield* Effect.forEach(holders, Fiber.interrupt)
        return took
      }).pipe(Effect.provide(storeOn(schema, app, 2)))
      assert.isBelow(interruptMillis, 1000)
      assert.strictEqual(yield* settled(app), 0)
      yield* dropSchema(schema)
    }).pipe(Effect.provide(Admin)))
})

describe("PostgreSQL faults: killed backends", () => {
  // Kills the backends of the pool that wait for a lock (the operation under test).
  const killWaiting = (app: string) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql.unsafe<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [app]
      ).pipe(Effect.map((rows) => rows.length)))
  const untilKilled = (app: string) =>
    killWaiting(app).pipe(Effect.repeat({ until: (n) => n > 0, schedule: Schedule.spaced("20 millis"), times: 200 }))

  const isStoreError = (exit: Exit.Exit<unknown, unknown>) => {
    if (!Exit.isFailure(exit)) return `succeeded`
    const failures = Cause.failures(exit.cause)
    const first = [...failures][0] as { _tag?: string } | undefined
    return Cause.isDie(exit.cause) ? `a defect: ${Cause.pretty(exit.cause)}` : first?._tag ?? Cause.pretty(exit.cause)
  }

  it.live("a multi-stream save whose backend is killed fails with EventStoreError and writes nothing", () =>
    Effect.gen(function*() {
      const schema = schemaName()
      const app = newId("chronicle-faults")
      const a = newId("order")
      const b = newId("order")
      const result = yield* Effect.gen(function*() {
        yield* Session.run(Effect.zipRight(Session.append(Order, b, [created()]), Session.saveChanges))
        // Another session holds b's lock, so the save waits in its transaction: then its backend dies.
        const holder = yield* Effect.fork(Session.run(holdLock(b)))
        yield* Effect.sleep(200)
        const save = yield* Effect.fork(Effect.exit(Session.run(Effect.gen(function*() {
          yield* Session.append(Order, a, [created()])
          yield* Session.append(Order, b, [new ItemReady({ name: "a" })])
          return yield* Session.saveChanges
        }))))
        yield* untilKilled(app)
        const exit = yield* Fiber.join(save)
        yield* Fiber.interrupt(holder)
        const after = yield* Effect.all([Session.run(Session.readStream(a)), Session.run(Session.readStream(b))])
        return { exit, after: after.map((events) => events.length) }
      }).pipe(Effect.provide(storeOn(schema, app, 4)))
      assert.strictEqual(isStoreError(result.exit), "EventStoreError")
      assert.deepStrictEqual(result.after, [0, 1])
      yield* dropSchema(schema)
    }).pipe(Effect.provide(Admin)))

  it.live("a second exclusive fetch whose backend is killed fails with EventStoreError, and the next save gets a healthy connection", () =>
    Effect.gen(function*() {
      const schema = schemaName()
      const app = newId("chronicle-faults")
      const a = newId("order")
      const b = newId("order")
      const result = yield* Effect.gen(function*() {
        const holder = yield* Effect.fork(Session.run(holdLock(b)))
        yield* Effect.sleep(200)
        const fetch = yield* Effect.fork(Effect.exit(Session.run(Effect.gen(function*() {
          yield* Session.fetchForExclusiveWriting(Order, a)
          yield* Session.fetchForExclusiveWriting(Order, b, { timeout: "10 seconds" })
        }))))
        yield* untilKilled(app)
        const exit = yield* Fiber.join(fetch)
        yield* Fiber.interrupt(holder)
        const saved = yield* Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForExclusiveWriting(Order, a, { timeout: "2 seconds" })
          yield* stream.appendOne(created())
          return yield* Session.saveChanges
        }))
        return { exit, version: saved.streams[0].version }
      }).pipe(Effect.provide(storeOn(schema, app, 4)))
      assert.strictEqual(isStoreError(result.exit), "EventStoreError")
      assert.strictEqual(result.version, 1)
      yield* dropSchema(schema)
    }).pipe(Effect.provide(Admin)))
})

describe("PostgreSQL faults: a killed connection is not handed to the next statement", () => {
  // Kills every backend of the store's pool (idle ones included): pg_terminate_backend
  // only signals, so the store's next statements race the backends' end.
  const killAll = (app: string) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql.unsafe<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`,
        [app]
      ).pipe(Effect.map((rows) => rows.length)))

  const describeExit = (exit: Exit.Exit<unknown, unknown>) => {
    if (Exit.isSuccess(exit)) return "ok"
    if (Cause.isDie(exit.cause)) return `defect: ${Cause.pretty(exit.cause)}`
    const first = [...Cause.failures(exit.cause)][0] as { _tag?: string; message?: string; cause?: { cause?: { message?: string; code?: string } } } | undefined
    return `${first?._tag}: ${first?.message} (${first?.cause?.cause?.code ?? ""} ${first?.cause?.cause?.message ?? ""})`
  }

  it.live("saves and reads right after every backend of the pool is killed get healthy connections (30 rounds, pool of 4)", () =>
    Effect.gen(function*() {
      const schema = schemaName()
      const app = newId("chronicle-faults")
      const rounds = 30
      const outcome = yield* Effect.gen(function*() {
        const warm = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, warm, [created()]), Session.saveChanges))
        const failures: Array<string> = []
        let killed = 0
        let operations = 0
        const saved: Array<string> = []
        for (let round = 0; round < rounds; round++) {
          // Every connection of the pool open and idle.
          yield* Effect.forEach([1, 2, 3, 4], () => Session.run(Session.readStream(warm)), { concurrency: "unbounded" })
          killed += yield* killAll(app).pipe(Effect.provide(Admin))
          const ops = [1, 2, 3, 4, 5, 6].map((i) => {
            if (i % 2 === 0) return Effect.as(Session.run(Session.readStream(warm)), undefined)
            const id = newId("order")
            return Session.run(Effect.zipRight(Session.append(Order, id, [created()]), Session.saveChanges)).pipe(
              Effect.tap(() => Effect.sync(() => saved.push(id))),
              Effect.asVoid
            )
          })
          operations += ops.length
          const exits = yield* Effect.forEach(ops, (op) => Effect.exit(Effect.timeout(op, "10 seconds")), { concurrency: "unbounded" })
          for (const exit of exits) if (!Exit.isSuccess(exit)) failures.push(describeExit(exit))
        }
        // Every save that succeeded is there once.
        const stored = yield* Effect.forEach(saved, (id) => Effect.map(Session.run(Session.readStream(id)), (events) => events.length))
        return { killed, operations, failures, stored }
      }).pipe(Effect.provide(storeOn(schema, app, 4)))
      console.log(
        `killed backends: ${outcome.killed}, operations: ${outcome.operations}, failed: ${outcome.failures.length}` +
          (outcome.failures.length > 0 ? `\n  ${[...new Set(outcome.failures)].join("\n  ")}` : "")
      )
      assert.isAbove(outcome.killed, rounds)
      assert.deepStrictEqual(outcome.failures, [])
      assert.isTrue(outcome.stored.every((n) => n === 1))
      assert.strictEqual(yield* settled(app), 0)
      yield* dropSchema(schema)
    }).pipe(Effect.provide(Admin)))
})
