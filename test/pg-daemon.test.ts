/**
 * The projection daemon on PostgreSQL: gap safety with out-of-order commits,
 * failover between daemons, and wake-up by LISTEN/NOTIFY.
 */
import { assert, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import pg from "pg"
import { inject } from "vitest"
import { Aggregate, EventStorePg, Projection, ProjectionDaemon, Projections, Session } from "effect-chronicle"
import { ProviderJoined } from "../examples/provider-shift.js"
import { Counter } from "./conformance.js"
import { newId, pgStore, ScratchSchema } from "./support.js"

const Shift = Aggregate.make({ name: "ProviderShift", events: ProviderJoined, initial: 0, evolve: (n) => n + 1 })
const Board = Projection.multiStream({
  name: "PgBoard",
  events: ProviderJoined,
  state: Schema.Struct({ providers: Schema.Array(Schema.String) }),
  initial: { providers: [] as ReadonlyArray<string> },
  key: (envelope) => envelope.data.boardId,
  evolve: (state, event) => ({ providers: [...state.providers, event.providerId] }),
  lifecycle: "Async"
})

const CounterAsync = Projection.snapshot(Counter, "Async")

const join = (board: string, providerId: string) =>
  Session.run(Effect.zipRight(
    Session.append(Shift, newId("shift"), [new ProviderJoined({ boardId: board, providerId })]),
    Session.saveChanges
  ))

const startDaemon = (options?: ProjectionDaemon.Options) =>
  Effect.map(Layer.build(ProjectionDaemon.layer(options)), (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon))

/** A whole second process's worth of store and daemon, on its own connections. */
const otherProcess = (schema: string, applicationName: string) =>
  ProjectionDaemon.layer({ pollInterval: "200 millis" }).pipe(
    Layer.provideMerge(EventStorePg.layer({ schema, claimInterval: "200 millis" })),
    Layer.provide(Projections.layer([Board])),
    Layer.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName }))
  )

it.live("transactions whose ids differ in digit count are projected in transaction order (as xid8, not as text)", () =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const schema = yield* ScratchSchema
    const board = newId("board")
    // Transaction ids 99 and 100 order the other way round as text; both lie below any live snapshot.
    for (const [tx, provider] of [["99", "p99"], ["100", "p100"]]) {
      const id = newId("shift")
      yield* sql.unsafe(`INSERT INTO "${schema}".streams (id, type, version) VALUES ($1, 'ProviderShift', 1)`, [id])
      yield* sql.unsafe(
        `INSERT INTO "${schema}".events (stream_id, version, type, stream_type, data, tx_id)
         VALUES ($1, 1, 'ProviderJoined', 'ProviderShift', $2::jsonb, $3::xid8)`,
        [id, JSON.stringify({ boardId: board, providerId: provider }), tx]
      )
    }
    // One event a batch, so that the order of the batches decides.
    const daemon = yield* startDaemon({ pollInterval: "50 millis", batchSize: 1 })
    yield* daemon.waitForNonStale({ timeout: "10 seconds" })
    assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Board, board)), Option.some({ providers: ["p99", "p100"] }))
  }).pipe(Effect.scoped, Effect.provide(pgStore().layer([Board]))))

it.live("a batch that skips a stream's version between two of its versions (transaction order is not version order) is projected without failing", () =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const schema = yield* ScratchSchema
    const id = newId("counter")
    // Version 3 by a transaction with a lower id than version 2's, as when a
    // transaction takes its id before it waits for the stream: (tx, seq) order is 1, 3, 2.
    yield* sql.unsafe(`INSERT INTO "${schema}".streams (id, type, version) VALUES ($1, 'Counter', 3)`, [id])
    for (const [version, tx] of [[1, "10"], [2, "30"], [3, "20"]] as const) {
      yield* sql.unsafe(
        `INSERT INTO "${schema}".events (stream_id, version, type, stream_type, data, tx_id)
         VALUES ($1, $2, 'Incremented', 'Counter', $3::jsonb, $4::xid8)`,
        [id, version, JSON.stringify({ by: 1, command: `c${version}` }), tx]
      )
    }
    const failures = Metric.tagged(Metric.tagged(ProjectionDaemon.metrics.failures, "projection", "Counter"), "version", "1")
    const failedBefore = (yield* Metric.value(failures)).count
    // Two events a batch: the first holds versions 1 and 3, not 2.
    const daemon = yield* startDaemon({ pollInterval: "50 millis", batchSize: 2 })
    yield* daemon.waitForNonStale({ timeout: "10 seconds" })
    assert.deepStrictEqual(
      yield* Session.run(Session.loadDocument(CounterAsync, id)),
      Option.some({ total: 3, commands: ["c1", "c2", "c3"] })
    )
    assert.strictEqual((yield* Metric.value(failures)).count, failedBefore)
    assert.isUndefined((yield* daemon.status)[0].error)
  }).pipe(Effect.scoped, Effect.provide(pgStore().layer([CounterAsync]))))

layer(pgStore().layer([Board]), { excludeTestServices: true })("projection daemon on postgres", (it) => {
  it.scoped("a transaction that takes a lower sequence and commits later is projected, never skipped", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const daemon = yield* startDaemon({ pollInterval: "50 millis" })
      const board = newId("board")
      const inserted = yield* Deferred.make<number>()
      const release = yield* Deferred.make<void>()
      // A: appends (drawing the lower sequence), then holds its transaction open.
      const a = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        const saved = yield* join(board, "A")
        yield* Deferred.succeed(inserted, saved.streams[0].sequences[0])
        yield* Deferred.await(release)
      })))
      const seqA = yield* Deferred.await(inserted)
      // B: appends with a higher sequence and commits first.
      const seqB = (yield* join(board, "B")).streams[0].sequences[0]
      assert.isAbove(seqB, seqA)
      // B is committed but must not be projected while A may still commit before it.
      const stale = yield* Effect.flip(daemon.waitForNonStale({ timeout: "500 millis" }))
      assert.strictEqual(stale._tag, "TimeoutException")
      assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(Board, board))))
      const status = (yield* daemon.status).find((s) => s.name === "PgBoard")!
      assert.isBelow(status.checkpoint, seqA)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(a)
      yield* daemon.waitForNonStale({ timeout: "10 seconds" })
      assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Board, board)), Option.some({ providers: ["A", "B"] }))
    }))

  it.scoped("LISTEN/NOTIFY wakes an idle daemon long before its next poll", () =>
    Effect.gen(function*() {
      const daemon = yield* startDaemon({ pollInterval: "1 minute" })
      yield* daemon.waitForNonStale({ timeout: "10 seconds" })
      // Let the worker go idle, and the store notice (within a second) that a daemon listens.
      yield* Effect.sleep("1500 millis")
      const board = newId("board")
      yield* join(board, "woken")
      yield* daemon.waitForNonStale({ timeout: "5 seconds" })
      assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Board, board)), Option.some({ providers: ["woken"] }))
    }))

  it.scoped("appends notify only while a daemon listens (pg_notify serialises commits)", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const heard: Array<string> = []
      const listener = new pg.Client({ connectionString: inject("databaseUrl") })
      yield* Effect.acquireRelease(Effect.promise(() => listener.connect()), () => Effect.promise(() => listener.end()))
      listener.on("notification", (n) => heard.push(n.channel))
      yield* Effect.promise(() => listener.query(`LISTEN "chronicle_${schema}"`))
      // A bare LISTEN is no registered daemon: once the store has seen that no daemon runs, nothing is sent.
      yield* Effect.sleep("1500 millis")
      yield* join(newId("board"), "unheard")
      yield* Effect.sleep("300 millis")
      assert.deepStrictEqual(heard, [])
      // With a daemon running, the store notices within a second and notifies.
      yield* startDaemon({ pollInterval: "1 minute" })
      yield* Effect.sleep("1500 millis")
      yield* join(newId("board"), "heard")
      yield* Effect.sleep("300 millis")
      assert.include(heard, `chronicle_${schema}`)
    }))

  it.scoped("two daemons: one leads each projection; when it dies the other takes over within seconds", () =>
    Effect.gen(function*() {
      const schema = yield* ScratchSchema
      const sql = yield* SqlClient.SqlClient
      const tag = `chronicle_${Math.random().toString(36).slice(2, 8)}`
      const scopes = [yield* Scope.make(), yield* Scope.make()] as const
      const daemons = yield* Effect.forEach([0, 1], (i) =>
        Effect.map(
          Layer.buildWithScope(otherProcess(schema, `${tag}_${i}`), scopes[i]),
          (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon)
        ))
      const board = newId("board")
      yield* join(board, "1")
      yield* daemons[0].waitForNonStale({ timeout: "10 seconds" })
      const leads = yield* Effect.forEach(daemons, (d) => Effect.map(d.status, (all) => all[0].leader))
      assert.deepStrictEqual([...leads].sort(), [false, true])
      const dead = leads[0] ? 0 : 1
      const survivor = 1 - dead
      // The leader's process dies: its connections are cut without a goodbye, then its fibers stop.
      yield* sql.unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [`${tag}_${dead}`])
      yield* Scope.close(scopes[dead], Exit.void)
      const started = Date.now()
      yield* join(board, "2")
      yield* daemons[survivor].waitForNonStale({ timeout: "10 seconds" })
      assert.isBelow(Date.now() - started, 5000)
      assert.isTrue((yield* daemons[survivor].status)[0].leader)
      assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Board, board)), Option.some({ providers: ["1", "2"] }))
      yield* Scope.close(scopes[survivor], Exit.void)
    }))
})
