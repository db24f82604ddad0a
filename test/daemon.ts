/**
 * The Async lifecycle and the projection daemon, on both stores.
 */
import { assert, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Aggregate, Projection, ProjectionDaemon, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { ProviderJoined } from "../examples/provider-shift.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

const OrderAsync = Projection.snapshot(Order, "Async")

const boardView = (version: number, weight: number, lifecycle: "Async" = "Async") =>
  Projection.multiStream({
    name: "AsyncBoard",
    version,
    events: ProviderJoined,
    state: Schema.Struct({ providers: Schema.Array(Schema.String), weight: Schema.Number }),
    initial: { providers: [] as ReadonlyArray<string>, weight: 0 },
    key: (envelope) => envelope.data.boardId,
    evolve: (state, event) => ({ providers: [...state.providers, event.providerId], weight: state.weight + weight }),
    lifecycle
  })
const BoardV1 = boardView(1, 1)
const BoardV2 = boardView(2, 10)

// A view whose evolve fails once on a chosen event (a crash in mid-batch),
// or on every try for the events in `stuck`.
let crashOn: string | undefined
const stuck = new Set<string>()
const Crashy = Projection.multiStream({
  name: "Crashy",
  events: ProviderJoined,
  state: Schema.Struct({ seen: Schema.Array(Schema.String) }),
  initial: { seen: [] as ReadonlyArray<string> },
  key: (envelope) => envelope.data.boardId,
  evolve: (state, event) => {
    if (event.providerId === crashOn) {
      crashOn = undefined
      throw new Error("crash in mid-batch")
    }
    if (stuck.has(event.providerId)) throw new Error("stuck")
    return { seen: [...state.seen, event.providerId] }
  },
  lifecycle: "Async"
})

/** Starts a daemon in the current scope. */
export const startDaemon = (options?: ProjectionDaemon.Options) =>
  Effect.map(Layer.build(ProjectionDaemon.layer({ pollInterval: "200 millis", ...options })), (ctx) =>
    Context.get(ctx, ProjectionDaemon.ProjectionDaemon))

const appendJoin = (board: string, providerId: string) =>
  Session.run(Effect.zipRight(
    Session.append(ShiftLike, newId("shift"), [new ProviderJoined({ boardId: board, providerId })]),
    Session.saveChanges
  ))

// The provider-shift stream type, with only the event these views read.
const ShiftLike = Aggregate.make({ name: "ProviderShift", events: ProviderJoined, initial: 0, evolve: (n) => n + 1 })

export const daemon = (store: StoreUnderTest) =>
  layer(store.layer([OrderAsync, BoardV1, BoardV2, Crashy]), { excludeTestServices: true })(
    `projection daemon: ${store.name}`,
    (it) => {
      it.scoped("Async snapshots and views catch up; status shows no lag", () =>
        Effect.gen(function*() {
          const daemon = yield* startDaemon()
          const ids = [newId("order"), newId("order"), newId("order")]
          for (const id of ids) {
            yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
            yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "a" })]), Session.saveChanges))
          }
          const board = newId("board")
          yield* appendJoin(board, "p1")
          yield* appendJoin(board, "p2")
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          for (const id of ids) {
            const stored = yield* Session.run(Session.loadDocument(OrderAsync, id))
            assert.deepStrictEqual(stored, yield* Session.run(Session.aggregateStream(Order, id)))
          }
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(BoardV1, board)), Option.some({ providers: ["p1", "p2"], weight: 2 }))
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(BoardV2, board)), Option.some({ providers: ["p1", "p2"], weight: 20 }))
          const status = yield* daemon.status
          assert.deepStrictEqual(status.map((s) => `${s.name}@${s.version}`).sort(), ["AsyncBoard@1", "AsyncBoard@2", "Crashy@1", "Order@1"])
          for (const s of status) {
            assert.strictEqual(s.lag, 0)
            assert.strictEqual(s.checkpoint, s.head)
            assert.isTrue(s.leader)
          }
          // The same figures as metrics.
          const tagged = <M extends Metric.Metric<any, any, any>>(metric: M) =>
            Metric.tagged(Metric.tagged(metric, "projection", "AsyncBoard"), "version", "1") as M
          assert.strictEqual((yield* Metric.value(tagged(ProjectionDaemon.metrics.lag))).value, 0)
          assert.strictEqual((yield* Metric.value(tagged(ProjectionDaemon.metrics.checkpoint))).value, status[0].head)
          assert.isAtLeast((yield* Metric.value(tagged(ProjectionDaemon.metrics.processed))).count, 2)
        }))

      it.scoped("Marten's spec: snapshot at 6, daemon stopped, 5 more events; fetchForWriting at 11 folds them", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* Effect.scoped(Effect.gen(function*() {
            const daemon = yield* startDaemon()
            yield* Session.run(Effect.zipRight(
              Session.startStream(Order, id, [created("a", "b", "c", "d", "e"), new ItemReady({ name: "a" })]),
              Session.saveChanges
            ))
            for (const name of ["b", "c", "d", "e"]) {
              yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name })]), Session.saveChanges))
            }
            yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          }))
          // The daemon is stopped: another session appends 5 more.
          yield* Session.run(Effect.zipRight(
            Session.append(Order, id, [new OrderReady(), new ItemReady({ name: "a" }), new ItemReady({ name: "b" }), new ItemReady({ name: "c" }), new OrderReady()]),
            Session.saveChanges
          ))
          const snapshot = Option.getOrThrow(yield* Session.run(Session.loadDocument(OrderAsync, id)))
          assert.strictEqual(snapshot.ready, false) // the stored snapshot is at version 6
          const stream = yield* Session.run(Session.fetchForWriting(Order, id, { expectedVersion: 11 }))
          assert.strictEqual(stream.version, 11)
          assert.deepStrictEqual(stream.aggregate, yield* Session.run(Session.aggregateStream(Order, id)))
          assert.deepStrictEqual(Option.map(stream.aggregate, (o) => o.ready), Option.some(true))
        }))

      it.scoped("a crash in mid-batch: documents and checkpoint stay consistent, nothing is projected twice", () =>
        Effect.gen(function*() {
          const board = newId("board")
          const providers = Array.from({ length: 10 }, (_, i) => `${board}-p${i}`)
          crashOn = providers[4]
          for (const p of providers) yield* appendJoin(board, p)
          const daemon = yield* startDaemon({ batchSize: 3 })
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          assert.isUndefined(crashOn) // it did crash once
          const view = Option.getOrThrow(yield* Session.run(Session.loadDocument(Crashy, board)))
          assert.deepStrictEqual(view.seen, providers)
        }))

      it.scoped("a stopped daemon restarts from its checkpoint and projects nothing twice", () =>
        Effect.gen(function*() {
          const board = newId("board")
          yield* Effect.scoped(Effect.gen(function*() {
            const daemon = yield* startDaemon()
            yield* appendJoin(board, "a")
            yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          }))
          yield* appendJoin(board, "b")
          const daemon = yield* startDaemon()
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(BoardV1, board)), Option.some({ providers: ["a", "b"], weight: 2 }))
        }))

      it.scoped("waitForNonStale fails with TimeoutException while a projection cannot catch up; status tells why", () =>
        Effect.gen(function*() {
          const board = newId("board")
          const daemon = yield* startDaemon()
          stuck.add(`${board}-stuck`)
          yield* appendJoin(board, `${board}-stuck`)
          const error = yield* Effect.flip(daemon.waitForNonStale({ timeout: "500 millis" }))
          assert.strictEqual(error._tag, "TimeoutException")
          const crashy = (yield* daemon.status).find((s) => s.name === "Crashy")!
          assert.strictEqual(crashy.lag, 1)
          assert.include(crashy.error, "stuck")
          stuck.clear()
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Crashy, board)), Option.some({ seen: [`${board}-stuck`] }))
        }))

      it.scoped("rebuild replays from the start with progress, and leaves the other version alone", () =>
        Effect.gen(function*() {
          const daemon = yield* startDaemon()
          const board = newId("board")
          for (const p of ["x", "y", "z"]) yield* appendJoin(board, p)
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          const v1Before = yield* Session.run(Session.loadDocument(BoardV1, board))
          const progress = Chunk.toReadonlyArray(yield* Stream.runCollect(daemon.rebuild(BoardV2)))
          assert.isAbove(progress.length, 1)
          assert.strictEqual(progress[0].processed, 0)
          const last = progress[progress.length - 1]
          assert.strictEqual(last.processed, last.total)
          for (let i = 1; i < progress.length; i++) assert.isAtLeast(progress[i].processed, progress[i - 1].processed)
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(BoardV1, board)), v1Before)
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(BoardV2, board)), Option.some({ providers: ["x", "y", "z"], weight: 30 }))
          // The worker is back after the rebuild.
          yield* appendJoin(board, "w")
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
          assert.deepStrictEqual(
            Option.map(yield* Session.run(Session.loadDocument(BoardV2, board)), (s) => s.providers),
            Option.some(["x", "y", "z", "w"])
          )
        }))

      it.scoped("status, waitForNonStale and rebuild need only the store: no daemon in this process", () =>
        Effect.gen(function*() {
          // No daemon runs: what is appended now waits.
          const id = newId("order")
          yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a")]), Session.saveChanges))
          const before = yield* ProjectionDaemon.status
          const order = before.find((s) => s.name === "Order")!
          assert.isAbove(order.lag, 0)
          for (const s of before) assert.isFalse(s.leader)
          const timedOut = yield* Effect.flip(ProjectionDaemon.waitForNonStale({ timeout: "300 millis" }))
          assert.strictEqual(timedOut._tag, "TimeoutException")
          // A rebuild from here projects everything into the snapshot.
          const progress = Chunk.toReadonlyArray(yield* Stream.runCollect(ProjectionDaemon.rebuild(OrderAsync)))
          assert.strictEqual(progress[progress.length - 1].processed, progress[progress.length - 1].total)
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(OrderAsync, id)), yield* Session.run(Session.aggregateStream(Order, id)))
          const after = yield* ProjectionDaemon.status
          assert.strictEqual(after.find((s) => s.name === "Order")!.lag, 0)
        }))

      it.scoped("status and waitForNonStale without a daemon here, while a daemon runs elsewhere", () =>
        Effect.gen(function*() {
          // The daemon runs on another node (on PostgreSQL, its own store and pool), not in this program.
          yield* Effect.provide(startDaemon(), yield* Layer.build(store.anotherNode([OrderAsync, BoardV1, BoardV2, Crashy])))
          const board = newId("board")
          yield* appendJoin(board, "p1")
          yield* ProjectionDaemon.waitForNonStale({ timeout: "20 seconds" })
          assert.deepStrictEqual(
            Option.map(yield* Session.run(Session.loadDocument(BoardV1, board)), (s) => s.providers),
            Option.some(["p1"])
          )
          const status = yield* ProjectionDaemon.status
          for (const s of status) {
            assert.strictEqual(s.lag, 0)
            // Leadership is that daemon's, not this program's.
            assert.isFalse(s.leader)
          }
          // A rebuild from here takes the projection's leadership from that daemon, and gives it back.
          const progress = Chunk.toReadonlyArray(
            yield* Stream.runCollect(ProjectionDaemon.rebuild(BoardV2)).pipe(Effect.timeout("20 seconds"))
          )
          assert.strictEqual(progress[progress.length - 1].processed, progress[progress.length - 1].total)
          assert.deepStrictEqual(
            Option.map(yield* Session.run(Session.loadDocument(BoardV2, board)), (s) => s.providers),
            Option.some(["p1"])
          )
          yield* appendJoin(board, "p2")
          yield* ProjectionDaemon.waitForNonStale({ timeout: "20 seconds" })
          assert.deepStrictEqual(
            Option.map(yield* Session.run(Session.loadDocument(BoardV2, board)), (s) => s.providers),
            Option.some(["p1", "p2"])
          )
        }))
    }
  )
