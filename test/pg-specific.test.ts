/**
 * What only PostgreSQL can show: joining a caller's transaction, connections
 * given back on interruption, concurrent migrations, wrapped driver errors.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { Aggregate, CommandHandler, type EventEnvelope, EventStore, EventStorePg, Projection, ProjectionDaemon, Projections, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated, type OrderEvent } from "../examples/order.js"
import { migrations } from "../src/pg/migrations.js"
import * as PgStorage from "../src/pg/PgStorage.js"
import { poolConnectionOf } from "../src/pg/driver.js"
import { maxSavesInFlight } from "../src/pg/PgStorage.js"
import { newId, pgClient, pgStore, ScratchSchema, scratchSchema } from "./support.js"

// The Order stream folded into the positions its envelopes carry: an evolve of three parameters.
const Positions = Aggregate.make({
  name: "Order",
  events: Order.events,
  initial: [] as ReadonlyArray<readonly [number, number]>,
  evolve: (state: ReadonlyArray<readonly [number, number]>, _event: OrderEvent, envelope: EventEnvelope.EventEnvelope<OrderEvent>) =>
    [...state, [envelope.version, envelope.sequence] as const]
})

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

const versionOf = (id: string) =>
  Session.run(Effect.map(Session.readStream(id), (events) => events.length))

describe("postgres", () => {
  layer(pgStore({ maxConnections: 3 }).layer([]), { excludeTestServices: true })("store", (it) => {
    it.effect("saveChanges inside the caller's withTransaction commits with the caller's own writes", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS "${schema}".outbox (id text primary key)`)
        const id = newId("order")
        yield* sql.withTransaction(Session.run(Effect.gen(function*() {
          yield* sql.unsafe(`INSERT INTO "${schema}".outbox VALUES ($1)`, [id])
          const stream = yield* Session.fetchForWriting(Order, id)
          yield* stream.appendOne(created("a"))
          yield* Session.saveChanges
        })))
        assert.strictEqual(yield* versionOf(id), 1)
        assert.strictEqual((yield* sql.unsafe(`SELECT id FROM "${schema}".outbox WHERE id = $1`, [id])).length, 1)
      }))

    it.effect("when the caller's transaction fails after saveChanges, the events roll back with it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS "${schema}".outbox (id text primary key)`)
        const a = newId("order")
        const b = newId("order")
        const error = yield* Effect.flip(sql.withTransaction(Session.run(Effect.gen(function*() {
          yield* sql.unsafe(`INSERT INTO "${schema}".outbox VALUES ($1)`, [a])
          yield* Session.append(Order, a, [created("a")])
          yield* Session.append(Order, b, [created("b")])
          yield* Session.saveChanges
          return yield* Effect.fail("caller gave up" as const)
        }))))
        assert.strictEqual(error, "caller gave up")
        assert.strictEqual(yield* versionOf(a), 0)
        assert.strictEqual(yield* versionOf(b), 0)
        assert.strictEqual((yield* sql.unsafe(`SELECT id FROM "${schema}".outbox WHERE id = $1`, [a])).length, 0)
      }))

    it.effect("an exclusive fetch inside the caller's transaction joins it: the caller's rollback undoes the save", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const id = newId("order")
        const error = yield* Effect.flip(sql.withTransaction(Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForExclusiveWriting(Order, id)
          yield* stream.appendOne(created("a"))
          yield* Session.saveChanges
          return yield* Effect.fail("caller gave up" as const)
        }))))
        assert.strictEqual(error, "caller gave up")
        assert.strictEqual(yield* versionOf(id), 0)
        // And when the caller commits, so does the session.
        yield* sql.withTransaction(Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForExclusiveWriting(Order, id)
          yield* stream.appendOne(created("a"))
          yield* Session.saveChanges
        })))
        assert.strictEqual(yield* versionOf(id), 1)
      }))

    it.effect("write-combining: concurrent saves share statements, each stream checked and failed on its own", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        const ids = Array.from({ length: 40 }, () => newId("wc"))
        yield* Effect.forEach(ids, (id) => Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges)), {
          concurrency: 8,
          discard: true
        })
        // 32 right expectations, 8 stale ones, all at once.
        const results = yield* Effect.forEach(ids, (id, i) =>
          Effect.either(Session.run(Effect.zipRight(
            Session.append(Order, id, [new ItemReady({ name: "a" })], { expectedVersion: i % 5 === 4 ? 0 : 1 }),
            Session.saveChanges
          ))), { concurrency: "unbounded" })
        const conflicts = results.flatMap((r, i) => r._tag === "Left" ? [[i, r.left]] as const : [])
        assert.deepStrictEqual(conflicts.map(([i]) => i), ids.flatMap((_, i) => i % 5 === 4 ? [i] : []))
        for (const [, error] of conflicts) assert.deepInclude(error, { _tag: "ConcurrencyError", expectedVersion: 0, actualVersion: 1 })
        for (const [i, id] of ids.entries()) assert.strictEqual(yield* versionOf(id), i % 5 === 4 ? 1 : 2)
        const rows = yield* sql.unsafe<{ seq: string; tx_id: string }>(
          `SELECT seq, tx_id::text FROM "${schema}".events WHERE stream_id = ANY($1) AND version = 2 ORDER BY seq`,
          [ids]
        )
        assert.strictEqual(rows.length, 32)
        // No sequence number lost to the stale saves that shared a statement...
        assert.strictEqual(Number(rows[31].seq) - Number(rows[0].seq) + 1, 32)
        // ...and saves were combined: fewer transactions than saves.
        assert.isBelow(new Set(rows.map((r) => r.tx_id)).size, 32)
      }))

    it.effect("outside a transaction, statements run prepared on @effect/sql-pg's pool-level connection (no reservation)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // The fast path depends on @effect/sql internals: an upgrade that moves them fails here, not silently.
        const conn = yield* poolConnectionOf(sql)
        assert.isDefined(conn)
        assert.isUndefined((conn as { pg?: unknown }).pg)
        const query = (n: number) => conn!.executeRaw({ name: "chronicle_test_probe", text: "SELECT $1::int + 1 AS n" } as unknown as string, [n])
        const results = yield* Effect.all([query(1), query(2), query(3), query(4)], { concurrency: 4 })
        assert.deepStrictEqual(results.map((r) => (r as { rows: Array<{ n: number }> }).rows[0].n), [2, 3, 4, 5])
        // Inside a transaction the acquirer gives the transaction's connection, which is not the pool's.
        const inTx = yield* sql.withTransaction(poolConnectionOf(sql))
        assert.strictEqual(inTx, conn)
        // And the node-postgres internals src/pg/driver.ts relies on: the pool-level
        // connection's runWithClient, and on the client it lends, its Query class,
        // processID, the two fields pg-pool reads, and its connection's events.
        type Lend = (f: (client: any, resume: (effect: Effect.Effect<any>) => void) => void) => Effect.Effect<any>
        const runWithClient = (conn as unknown as { runWithClient?: Lend }).runWithClient
        assert.strictEqual(typeof runWithClient, "function")
        const client = yield* runWithClient!.call(conn, (client, resume) => resume(Effect.succeed(client)))
        assert.strictEqual(typeof client.constructor.Query, "function")
        assert.strictEqual(typeof client.processID, "number")
        assert.strictEqual(client._queryable, true)
        assert.strictEqual(client._ending, false)
        assert.strictEqual(typeof client.connection?.prependListener, "function")
      }))

    it.effect("interrupted exclusive fetches give back their lock and their connection (pool of 3)", () =>
      Effect.gen(function*() {
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges))
        for (let round = 0; round < 6; round++) {
          const holder = yield* Effect.fork(Session.run(Effect.zipRight(
            Session.fetchForExclusiveWriting(Order, id),
            Effect.never
          )))
          yield* Effect.sleep("30 millis")
          const waiter = yield* Effect.fork(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "30 seconds" })))
          yield* Effect.sleep("30 millis")
          yield* Fiber.interrupt(waiter)
          yield* Fiber.interrupt(holder)
        }
        // With a leak, six rounds would have exhausted the three connections long ago.
        const stream = yield* Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" })
          yield* stream.appendOne(new ItemReady({ name: "a" }))
          yield* Session.saveChanges
          return stream
        })).pipe(Effect.timeout("5 seconds"))
        assert.strictEqual(stream.version, 1)
        assert.strictEqual(yield* versionOf(id), 2)
        const sql = yield* SqlClient.SqlClient
        const idle = yield* sql.unsafe<{ n: string }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'idle in transaction' AND application_name = '@effect/sql-pg'`
        )
        assert.strictEqual(Number(idle[0].n), 0)
      }))

    it.effect("a storage failure is an EventStoreError wrapping the driver's error, never a raw SqlError", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        const id = newId("order")
        // A constraint the events table enforces makes the insert fail inside PostgreSQL.
        yield* sql.unsafe(`ALTER TABLE "${schema}".events ADD CONSTRAINT no_orders CHECK (type <> 'OrderCreated') NOT VALID`)
        const error = yield* Effect.flip(
          Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges))
        )
        yield* sql.unsafe(`ALTER TABLE "${schema}".events DROP CONSTRAINT no_orders`)
        assert.strictEqual(error._tag, "EventStoreError")
        assert.strictEqual((error as any).cause?._tag, "SqlError")
        assert.strictEqual(yield* versionOf(id), 0)
        // The stream row's version bump rolled back with the statement: the next save starts at 1.
        const saved = yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges))
        assert.strictEqual(saved.streams[0].version, 1)
      }))
  })

it.live("write-combining: a save interrupted while it waits to be combined writes nothing; the others land", () =>
    Effect.gen(function*() {
      const blockers = Array.from({ length: maxSavesInFlight }, () => newId("wc"))
      const others = Array.from({ length: 5 }, () => newId("wc"))
      const dropped = newId("wc")
      yield* Session.run(Effect.gen(function*() {
        const held = yield* Effect.forEach(blockers, (id) => Session.fetchForExclusiveWriting(Order, id))
        // Saves to the held streams go first and wait for the locks, filling every in-flight slot.
        const first = yield* Effect.forEach(blockers, (id) =>
          Effect.fork(Session.run(Effect.zipRight(Session.append(Order, id, [created("x")]), Session.saveChanges))))
        yield* Effect.sleep("100 millis")
        const queued = yield* Effect.forEach(others, (id) =>
          Effect.fork(Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges))))
        const victim = yield* Effect.fork(Session.run(Effect.zipRight(Session.append(Order, dropped, [created("a")]), Session.saveChanges)))
        yield* Effect.sleep("100 millis")
        // Nothing of the queued saves has gone out yet.
        for (const id of others) assert.strictEqual(yield* versionOf(id), 0)
        yield* Fiber.interrupt(victim)
        yield* Effect.forEach(held, (stream) => stream.appendOne(created("held")), { discard: true })
        yield* Session.saveChanges
        yield* Effect.forEach(first, (f) => Effect.either(Fiber.join(f)), { discard: true })
        yield* Effect.forEach(queued, Fiber.join, { discard: true })
      }))
      for (const id of others) assert.strictEqual(yield* versionOf(id), 1)
      assert.strictEqual(yield* versionOf(dropped), 0)
      yield* idle
    }).pipe(Effect.provide(pgStore({ maxConnections: 20 }).layer([]))))

  // Waits until the store has nothing in flight; a leaked slot never gets there.
  const idle = Effect.gen(function*() {
    const inFlight = PgStorage.inFlightOf.get((yield* EventStore.EventStore).storage)!
    yield* Effect.sync(inFlight).pipe(
      Effect.repeat({ until: (n) => n.reads === 0 && n.saves === 0 && n.queued === 0, schedule: Schedule.spaced("20 millis") }),
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => `still in flight: ${JSON.stringify(inFlight())}` })
    )
  })

  const combinedReads = (schema: string) =>
    Metric.value(Metric.tagged(PgStorage.combinedReadStatements, "schema", schema)).pipe(Effect.map((state) => state.count))

  it.live("read-combining: concurrent fetches beyond the in-flight limit share statements, each seeing its own stream and its own writes", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const ids = Array.from({ length: 24 }, () => newId("rc"))
      // Stream i holds i events (the first has none: an unknown stream).
      yield* Effect.forEach(ids, (id, i) =>
        i === 0 ? Effect.void : Session.run(Effect.zipRight(
          Session.append(Order, id, [created("a"), ...Array.from({ length: i - 1 }, () => new ItemReady({ name: "a" }))]),
          Session.saveChanges
        )), { concurrency: 8, discard: true })
      const before = yield* combinedReads(schema)
      // 72 fetches at once, every stream three times; a third also save and fetch again.
      const results = yield* Effect.forEach([...ids, ...ids, ...ids], (id, n) =>
        Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForWriting(Order, id)
          const seen = stream.version
          if (n >= 48 && seen > 0) {
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
            const again = yield* Session.run(Session.readStream(id))
            return [seen, again.length] as const
          }
          return [seen, -1] as const
        })), { concurrency: "unbounded" })
      for (const [n, [seen, after]] of results.entries()) {
        const i = n % 24
        if (n < 48) assert.strictEqual(seen, i, `fetch ${n} of stream ${i}`)
        else if (i > 0) assert.strictEqual(after, seen + 1, `fetch ${n} reads its own write`)
      }
      // Reads from a version on combine as well. Stream i (i > 0) now holds i + 1 events.
      const fromOf = (i: number) => Math.max(1, i - 1)
      const beforeTails = yield* combinedReads(schema)
      // A third ask from half a version below: versions are whole, so they read the same.
      const tails = yield* Effect.forEach([...ids, ...ids, ...ids], (id, n) =>
        Session.run(Session.readStream(id, { fromVersion: fromOf(n % 24) - (n >= 48 ? 0.5 : 0) })), { concurrency: "unbounded" })
      for (const [n, tail] of tails.entries()) {
        const i = n % 24
        const expected = i === 0 ? [] : Array.from({ length: i + 2 - fromOf(i) }, (_, k) => fromOf(i) + k)
        assert.deepStrictEqual(tail.map((e) => e.version), expected, `tail read ${n} of stream ${i}`)
        for (const event of tail) assert.strictEqual(event.streamId, ids[i])
      }
      assert.isAbove((yield* combinedReads(schema)) - beforeTails, 0)
      assert.isAbove((yield* combinedReads(schema)) - before, 0)
      for (const [i, id] of ids.entries()) assert.strictEqual(yield* versionOf(id), i === 0 ? 0 : i + 1)
    }).pipe(Effect.provide(pgStore({ maxConnections: 20 }).layer([]))))

  it.live("read-combining: lean and whole-event fetches queued together each get their kind of read, folded right", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const ids = Array.from({ length: 12 }, () => newId("rc"))
      yield* Effect.forEach(ids, (id, i) =>
        Session.run(Effect.zipRight(
          Session.append(Order, id, [created("a"), ...Array.from({ length: i }, () => new ItemReady({ name: "a" }))]),
          Session.saveChanges
        )), { concurrency: 8, discard: true })
      const positions = yield* Effect.forEach(ids, (id) =>
        Effect.map(Session.run(Session.readStream(id)), (events) => events.map((e) => [e.version, e.sequence] as const)))
      const before = yield* combinedReads(schema)
      // An Order's evolve reads no envelope (read lean); Positions' reads each one (whole events).
      const results = yield* Effect.forEach([...ids, ...ids, ...ids, ...ids], (id, n) =>
        n % 2 === 0
          ? Effect.map(Session.run(Session.fetchForWriting(Order, id)), (s) => ({ n, version: s.version, positions: undefined }))
          : Effect.map(Session.run(Session.fetchForWriting(Positions, id)), (s) => ({
            n,
            version: s.version,
            positions: Option.getOrUndefined(s.aggregate)
          })), { concurrency: "unbounded" })
      for (const { n, positions: seen, version } of results) {
        const i = n % 12
        assert.strictEqual(version, i + 1, `fetch ${n}`)
        if (seen !== undefined) assert.deepStrictEqual(seen, positions[i], `envelopes of fetch ${n}`)
      }
      assert.isAbove((yield* combinedReads(schema)) - before, 0)
    }).pipe(Effect.provide(pgStore({ maxConnections: 20 }).layer([]))))

  it.live("read-combining: interrupted waiting fetches leave the others' reads whole and give back every slot", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const ids = Array.from({ length: 8 }, () => newId("rc"))
      yield* Effect.forEach(ids, (id) => Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges)), {
        discard: true
      })
      // More rounds than there are slots: one leaked per round would stall them all.
      for (let round = 0; round < 12; round++) {
        const fibers = yield* Effect.forEach(Array.from({ length: 64 }, (_, n) => ids[n % 8]), (id) =>
          Effect.fork(Session.run(Effect.map(Session.fetchForWriting(Order, id), (stream) => stream.version))))
        // Interrupt every other one, queued or running.
        yield* Effect.forEach(fibers.filter((_, n) => n % 2 === 1), Fiber.interrupt, { discard: true })
        const versions = yield* Effect.forEach(fibers.filter((_, n) => n % 2 === 0), Fiber.join).pipe(
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => `round ${round} stalled` })
        )
        assert.deepStrictEqual(versions, versions.map(() => 1))
      }
      // With a leaked slot, lone reads would queue and be counted as combined statements.
      const before = yield* combinedReads(schema)
      for (const id of ids) assert.strictEqual(yield* versionOf(id), 1)
      assert.strictEqual(yield* combinedReads(schema), before)
      yield* idle
    }).pipe(Effect.provide(pgStore({ maxConnections: 20 }).layer([]))))

  it.live("read-combining off: concurrent fetches each run their own statement", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const ids = Array.from({ length: 40 }, () => newId("rc"))
      const versions = yield* Effect.forEach(ids, (id) =>
        Session.run(Effect.map(Session.fetchForWriting(Order, id), (stream) => stream.version)), { concurrency: "unbounded" })
      assert.deepStrictEqual(versions, ids.map(() => 0))
      assert.strictEqual(yield* combinedReads(schema), 0)
    }).pipe(Effect.provide(Layer.unwrapEffect(Effect.map(ScratchSchema, (schema) =>
      EventStorePg.layer({ schema, readCombining: false }).pipe(Layer.provideMerge(Projections.layer([])))
    )).pipe(Layer.provideMerge(scratchSchema()), Layer.provideMerge(pgClient())))))

  it.live("read-combining: when the shared statement fails, every waiting fetch fails with an EventStoreError naming its stream", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const schema = yield* ScratchSchema
      yield* sql.unsafe(`DROP TABLE "${schema}".events CASCADE`)
      const ids = Array.from({ length: 40 }, () => newId("rc"))
      const errors = yield* Effect.forEach(ids, (id) => Effect.flip(Session.run(Session.fetchForWriting(Order, id))), {
        concurrency: "unbounded"
      })
      assert.isAbove(yield* combinedReads(schema), 0)
      for (const [i, error] of errors.entries()) {
        assert.strictEqual(error._tag, "EventStoreError")
        assert.include(error.message, ids[i])
      }
    }).pipe(Effect.provide(pgStore({ maxConnections: 20 }).layer([]))))

  it.live("schema names of 63 characters: statement and channel names fit PostgreSQL, and two schemas alike but for their end share a pool apart", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const base = `chronicle_long_${Math.random().toString(36).slice(2, 10)}_`
      const [a, b] = ["a", "b"].map((end) => base + "x".repeat(62 - base.length) + end)
      yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe(`DROP SCHEMA IF EXISTS "${a}" CASCADE; DROP SCHEMA IF EXISTS "${b}" CASCADE`)))
      const storeOf = (schema: string) =>
        Layer.build(EventStorePg.layer({ schema }).pipe(Layer.provideMerge(Projections.layer([Projection.snapshot(Order, "Async")]))))
      const inA = yield* storeOf(a)
      const inB = yield* storeOf(b)
      const id = newId("order")
      yield* Effect.provide(Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges)), inA)
      yield* Effect.provide(Session.run(Effect.zipRight(Session.append(Order, id, [created("b", "c"), new ItemReady({ name: "b" })]), Session.saveChanges)), inB)
      const fetched = (ctx: typeof inA) =>
        Effect.provide(Session.run(Effect.map(Session.fetchForWriting(Order, id), (stream) => [stream.version, stream.aggregate] as const)), ctx)
      const [versionA] = yield* fetched(inA)
      const [versionB] = yield* fetched(inB)
      assert.deepStrictEqual([versionA, versionB], [1, 2])
      // A projection daemon listens on a's channel; it polls once a minute, so only the notification can wake it.
      yield* Effect.gen(function*() {
        yield* Effect.sleep("1500 millis") // the store notices the listener within a second
        yield* Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForWriting(Order, id)
          yield* stream.appendOne(new ItemReady({ name: "a" }))
          yield* Session.saveChanges
        }))
        yield* ProjectionDaemon.waitForNonStale({ timeout: "5 seconds" })
      }).pipe(Effect.provide(ProjectionDaemon.layer({ pollInterval: "60 seconds" }).pipe(Layer.provideMerge(Layer.succeedContext(inA)))))
      assert.strictEqual(yield* Effect.provide(versionOf(id), inA), 2)
      assert.strictEqual(yield* Effect.provide(versionOf(id), inB), 2)
    }).pipe(Effect.scoped, Effect.provide(pgClient({ maxConnections: 2 }))))

  describe("Live states kept between sessions", () => {
    const kept = pgStore({ liveStateCache: 100 })
    const readyOf = (id: string) =>
      Session.run(Effect.map(Session.fetchForWriting(Order, id), (stream) => [stream.version, stream.aggregate.pipe(Option.map((s) => s.items.map((i) => i.ready)))] as const))

    it.live("a fetch reads only the events after the kept version (an old event the schema now rejects is not read again)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b")]), Session.saveChanges))
        assert.deepStrictEqual(yield* readyOf(id), [1, Option.some([false, false])])
        yield* sql.unsafe(`UPDATE "${schema}".events SET data = '{"items": 7}' WHERE stream_id = $1 AND version = 1`, [id])
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "b" })]), Session.saveChanges))
        assert.deepStrictEqual(yield* readyOf(id), [2, Option.some([false, true])])
        // The same store without kept states reads everything, and fails on the rewritten event.
        const fresh = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id)).pipe(
          Effect.provide(EventStorePg.layer({ schema }).pipe(Layer.provide(Projections.layer([]))))
        ))
        assert.strictEqual(fresh._tag, "EventDecodeError")
      }).pipe(Effect.provide(kept.layer([]))))

    it.live("what a fetch reads inside a caller's transaction is not kept: a rollback leaves nothing behind", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b")]), Session.saveChanges))
        const outcome = yield* Effect.flip(sql.withTransaction(Effect.gen(function*() {
          yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "a" })]), Session.saveChanges))
          // Sees the uncommitted event; must not keep it.
          assert.deepStrictEqual(yield* readyOf(id), [2, Option.some([true, false])])
          return yield* Effect.fail("caller gave up" as const)
        })))
        assert.strictEqual(outcome, "caller gave up")
        assert.deepStrictEqual(yield* readyOf(id), [1, Option.some([false, false])])
        assert.strictEqual(yield* versionOf(id), 1)
      }).pipe(Effect.provide(kept.layer([]))))

    it.live("a stream replaced under the process (reset, then its id reused) is read whole, not served from the kept state", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const schema = yield* ScratchSchema
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b"), new ItemReady({ name: "a" })]), Session.saveChanges))
        assert.deepStrictEqual(yield* readyOf(id), [2, Option.some([true, false])])
        yield* sql.unsafe(`DELETE FROM "${schema}".events WHERE stream_id = $1`, [id])
        yield* sql.unsafe(`DELETE FROM "${schema}".streams WHERE id = $1`, [id])
        yield* Session.run(Effect.zipRight(
          Session.append(Order, id, [created("x", "y"), new ItemReady({ name: "y" }), new ItemReady({ name: "x" })]),
          Session.saveChanges
        ))
        const [version, state] = yield* Session.run(Effect.map(Session.fetchForWriting(Order, id), (stream) => [stream.version, stream.aggregate] as const))
        assert.strictEqual(version, 3)
        assert.deepStrictEqual(Option.map(state, (s) => s.items.map((i) => [i.name, i.ready])), Option.some([["x", true], ["y", true]]))
        // Shrunk behind the kept version: read whole as well.
        yield* sql.unsafe(`DELETE FROM "${schema}".events WHERE stream_id = $1 AND version = 3`, [id])
        yield* sql.unsafe(`UPDATE "${schema}".streams SET version = 2 WHERE id = $1`, [id])
        assert.deepStrictEqual(yield* readyOf(id), [2, Option.some([false, true])])
      }).pipe(Effect.provide(kept.layer([]))))

    it.live("inside a caller's REPEATABLE READ transaction a fetch sees its snapshot, not a newer kept state", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b")]), Session.saveChanges))
        const snapshotTaken = yield* Deferred.make<void>()
        const movedOn = yield* Deferred.make<void>()
        const inTx = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
          yield* sql.unsafe(`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`)
          yield* sql.unsafe(`SELECT count(*) FROM pg_class`) // the snapshot: the stream at version 1
          yield* Deferred.succeed(snapshotTaken, undefined)
          yield* Deferred.await(movedOn)
          const direct = yield* Session.run(Session.readStream(id))
          const [version] = yield* readyOf(id)
          return [direct.length, version] as const
        })))
        yield* Deferred.await(snapshotTaken)
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "a" })]), Session.saveChanges))
        assert.deepStrictEqual(yield* readyOf(id), [2, Option.some([true, false])]) // kept at version 2
        yield* Deferred.succeed(movedOn, undefined)
        assert.deepStrictEqual(yield* Fiber.join(inTx), [1, 1])
      }).pipe(Effect.provide(kept.layer([]))))
  })

  it.live("repeated exclusive fetch-and-save cycles in one session give their connection back at each save (pool of 2)", () =>
    Effect.gen(function*() {
      const id = newId("order")
      yield* Session.run(Effect.gen(function*() {
        for (let i = 0; i < 5; i++) {
          const stream = yield* Session.fetchForExclusiveWriting(Order, id, { timeout: "2 seconds" })
          yield* stream.appendOne(i === 0 ? created("a") : new ItemReady({ name: "a" }))
          yield* Session.saveChanges
        }
      })).pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(yield* versionOf(id), 5)
    }).pipe(Effect.provide(pgStore({ maxConnections: 2 }).layer([]))))

  it.live("an exclusive fetch reads its stream on its own transaction's connection, after the lock (pool of 1)", () =>
    Effect.gen(function*() {
      const id = newId("order")
      // A read made on the pool while the transaction holds the only connection would wait for ever.
      for (let i = 0; i < 3; i++) {
        yield* Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForExclusiveWriting(Order, id, { timeout: "2 seconds" })
          assert.strictEqual(stream.version, i)
          yield* stream.appendOne(i === 0 ? created("a") : new ItemReady({ name: "a" }))
          yield* Session.saveChanges
        })).pipe(Effect.timeout("5 seconds"))
      }
      const handled = yield* CommandHandler.make(Order, { id: (x: string) => x, decide: () => [new ItemReady({ name: "a" })], exclusive: true })(id).pipe(
        Effect.timeout("5 seconds")
      )
      assert.strictEqual(handled.version, 4)
      assert.strictEqual(yield* versionOf(id), 4)
    }).pipe(Effect.provide(pgStore({ maxConnections: 1 }).layer([]))))

  it.live("several stores migrating one fresh schema at once apply each migration exactly once", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const stores = Array.from({ length: 6 }, () =>
        Layer.build(EventStorePg.layer({ schema }).pipe(Layer.provide(Projections.layer([])))))
      yield* Effect.all(stores, { concurrency: "unbounded" })
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql.unsafe<{ id: number }>(`SELECT id FROM "${schema}".migrations ORDER BY id`)
      assert.deepStrictEqual(rows.map((r) => Number(r.id)), migrations.map((m) => m.id))
      const tables = yield* sql.unsafe<{ table_name: string }>(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
        [schema]
      )
      assert.deepStrictEqual(tables.map((t) => t.table_name), [
        "commits",
        "dead_letters",
        "documents",
        "events",
        "listeners",
        "migrations",
        "projection_progress",
        "streams"
      ])
    }).pipe(Effect.scoped, Effect.provide(scratchSchema().pipe(Layer.provideMerge(pgClient())))))

  it.live("migration 4 moves a schema of migrations 1-3 to (tenant, id) identity with its data intact", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const sql = yield* SqlClient.SqlClient
      const s = `"${schema}"`
      // The schema as 0.1 left it: migrations 1-3, a stream of tenant a with an Inline snapshot.
      yield* sql.unsafe(`CREATE SCHEMA ${s}`)
      yield* sql.unsafe(`CREATE TABLE ${s}.migrations (id int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
      for (const m of migrations.filter((m) => m.id <= 3)) {
        yield* sql.unsafe(m.sql(s))
        yield* sql.unsafe(`INSERT INTO ${s}.migrations (id, name) VALUES ($1, $2)`, [m.id, m.name])
      }
      const id = newId("order")
      yield* sql.unsafe(`INSERT INTO ${s}.streams (id, type, version, tenant_id) VALUES ($1, 'Order', 1, 'a')`, [id])
      yield* sql.unsafe(
        `INSERT INTO ${s}.events (stream_id, version, type, stream_type, data, tenant_id) VALUES ($1, 1, 'OrderCreated', 'Order', $2::jsonb, 'a')`,
        [id, JSON.stringify({ items: [{ name: "x", ready: false }] })]
      )
      yield* sql.unsafe(
        `INSERT INTO ${s}.documents (projection, projection_version, id, data, stream_version) VALUES ('Order', 1, $1, $2::jsonb, 1)`,
        [id, JSON.stringify({ items: [{ name: "x", ready: false }], ready: false, shipped: false })]
      )
      const OrderInline = Projection.snapshot(Order, "Inline")
      yield* Effect.gen(function*() {
        // Data intact, in its tenant; the snapshot took its stream's tenant.
        const read = yield* EventStore.withTenant(Session.run(Session.readStream(id)), "a")
        assert.deepStrictEqual(read.map((e) => [e.version, e.type, e.tenantId]), [[1, "OrderCreated", "a"]])
        const doc = yield* EventStore.withTenant(Session.run(Session.loadDocument(OrderInline, id)), "a")
        assert.deepStrictEqual(Option.map(doc, (d) => d.items.map((i) => i.name)), Option.some(["x"]))
        // Tenancy works: b starts its own stream of the same id.
        yield* EventStore.withTenant(Session.run(Effect.zipRight(Session.startStream(Order, id, [created("y")]), Session.saveChanges)), "b")
        const readB = yield* EventStore.withTenant(Session.run(Session.readStream(id)), "b")
        assert.deepStrictEqual(readB.map((e) => [e.version, e.tenantId]), [[1, "b"]])
        const docB = yield* EventStore.withTenant(Session.run(Session.loadDocument(OrderInline, id)), "b")
        assert.deepStrictEqual(Option.map(docB, (d) => d.items.map((i) => i.name)), Option.some(["y"]))
        const applied = yield* sql.unsafe<{ id: number }>(`SELECT id FROM ${s}.migrations ORDER BY id`)
        assert.deepStrictEqual(applied.map((r) => Number(r.id)), migrations.map((m) => m.id))
      }).pipe(Effect.provide(EventStorePg.layer({ schema }).pipe(Layer.provideMerge(Projections.layer([OrderInline])))))
    }).pipe(Effect.scoped, Effect.provide(scratchSchema().pipe(Layer.provideMerge(pgClient())))))

  it.live("a schema name that is not an identifier is an InvalidOptionError when the layer is built, before any SQL runs", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      for (const schema of ["x; DROP TABLE y", "", "1abc", "a".repeat(64), "sch\u0000ema", 42 as unknown as string]) {
        const error = yield* Effect.flip(Layer.build(
          EventStorePg.layer({ schema }).pipe(Layer.provide(Projections.layer([])))
        ))
        assert.deepInclude(error, { _tag: "InvalidOptionError", option: "schema", value: schema })
        assert.include(error.message, "PostgreSQL identifier")
      }
      const created = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'x;%'`
      assert.strictEqual(created[0].n, 0)
    }).pipe(Effect.scoped, Effect.provide(pgClient())))

  it.live("fetchLatest of an unknown stream is None on a fresh store", () =>
    Effect.gen(function*() {
      const latest = yield* Session.run(Session.fetchLatest(Order, newId("none")))
      assert.isTrue(Option.isNone(latest))
    }).pipe(Effect.provide(pgStore().layer([]))))
})
