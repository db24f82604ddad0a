/**
 * Inline projections on both stores: what is read and written, and that every
 * lifecycle agrees with a rebuild from the events.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, EventStore, Projection, ProjectionDaemon, Session, type Storage } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { ProviderJoined, ProviderReady, ProviderShift } from "../examples/provider-shift.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

/** Counts what the engine asks of the storage port. */
export interface Calls {
  readStream: number
  loadSnapshot: Array<{ snapshot: boolean; tail: number }>
  commits: Array<{ documents: number; inline: boolean }>
}
const calls: Calls = { readStream: 0, loadSnapshot: [], commits: [] }
const resetCalls = () => {
  calls.readStream = 0
  calls.loadSnapshot = []
  calls.commits = []
}

const spy = (storage: Storage.Storage): Storage.Storage => {
  const wrap = <T extends Storage.Operations>(ops: T): T => ({
    ...ops,
    readStream: (tenant, id, options) => Effect.zipRight(Effect.sync(() => calls.readStream++), ops.readStream(tenant, id, options)),
    loadSnapshot: (tenant, id, p, versions) =>
      Effect.tap(ops.loadSnapshot(tenant, id, p, versions), (r) =>
        Effect.sync(() => calls.loadSnapshot.push({ snapshot: r.snapshot !== undefined, tail: r.tail.length }))),
    commit: (batch) =>
      Effect.zipRight(
        Effect.sync(() => calls.commits.push({ documents: batch.documents?.length ?? 0, inline: batch.inline !== undefined })),
        ops.commit(batch)
      )
  })
  return { ...wrap(storage), begin: Effect.map(storage.begin, wrap) }
}

const spied = (base: Layer.Layer<any, any, never>) =>
  Layer.effect(EventStore.EventStore, Effect.map(EventStore.EventStore, (store) => ({ ...store, storage: spy(store.storage) })))
    .pipe(Layer.provideMerge(base))

// An order aggregate whose evolve reads the envelope's sequence and timestamp.
const Stamped = Aggregate.make({
  name: "Stamped",
  events: Schema.Union(OrderCreated, ItemReady, OrderReady),
  state: Schema.Struct({ count: Schema.Number, lastSequence: Schema.Number, lastAt: Schema.Number }),
  initial: { count: 0, lastSequence: 0, lastAt: 0 },
  evolve: (state, _event, envelope) => ({
    count: state.count + 1,
    lastSequence: envelope.sequence,
    lastAt: envelope.timestamp.getTime()
  })
})

// A view keyed by something other than the stream id: each board's providers.
const BoardState = Schema.Struct({ providers: Schema.Array(Schema.String) })
const Board = Projection.multiStream({
  name: "Board",
  events: ProviderJoined,
  state: BoardState,
  initial: { providers: [] as ReadonlyArray<string> },
  key: (envelope) => envelope.data.boardId,
  evolve: (state, event) => ({ providers: [...state.providers, event.providerId] }),
  lifecycle: "Inline"
})
// And one keyed by the day the event was stored.
const Daily = Projection.multiStream({
  name: "DailyOrders",
  events: OrderCreated,
  state: Schema.Struct({ orders: Schema.Number, items: Schema.Number }),
  initial: { orders: 0, items: 0 },
  key: (envelope) => envelope.timestamp.toISOString().slice(0, 10),
  evolve: (state, event) => ({ orders: state.orders + 1, items: state.items + event.items.length }),
  lifecycle: "Inline"
})

const OrderInline = Projection.snapshot(Order, "Inline")
const StampedInline = Projection.snapshot(Stamped, "Inline")

const rebuild = <S>(aggregate: Aggregate.Aggregate<S, any, any, any>, id: string) =>
  Session.run(Session.aggregateStream(aggregate, id))

const OrderV1 = Projection.snapshot(Order, "Inline", { version: 1 })
const OrderV2 = Projection.snapshot(Order, "Async", { version: 2 })

export const projections = (store: StoreUnderTest) => {
  layer(spied(store.layer([OrderV1, OrderV2])), { excludeTestServices: true })(`blue/green: ${store.name}`, (it) => {
    it.scoped("version 2 is built beside version 1 and read where it has caught up", () =>
      Effect.gen(function*() {
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
        resetCalls()
        // No daemon yet: version 2 has no document, so the fetch reads version 1's and no event.
        const before = yield* Session.run(Session.fetchLatest(Order, id))
        assert.deepStrictEqual(calls.loadSnapshot, [{ snapshot: true, tail: 0 }])
        assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(OrderV2, id))))
        const daemon = yield* Effect.map(
          Layer.build(ProjectionDaemon.layer({ pollInterval: "100 millis" })),
          (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon)
        )
        yield* daemon.waitForNonStale({ timeout: "20 seconds" })
        assert.deepStrictEqual(yield* Session.run(Session.loadDocument(OrderV2, id)), before)
        // Version 1 keeps being written inline; version 2 follows asynchronously.
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "a" })]), Session.saveChanges))
        yield* daemon.waitForNonStale({ timeout: "20 seconds" })
        const latest = yield* Session.run(Session.fetchLatest(Order, id))
        assert.deepStrictEqual(yield* Session.run(Session.loadDocument(OrderV1, id)), latest)
        assert.deepStrictEqual(yield* Session.run(Session.loadDocument(OrderV2, id)), latest)
      }))
  })

  layer(spied(store.layer([OrderInline, StampedInline, Board, Daily])), { excludeTestServices: true })(
    `inline projections: ${store.name}`,
    (it) => {
      describe("Inline snapshots", () => {
        it.effect("fetchForWriting reads the snapshot and no events; the save is one commit carrying the snapshot", () =>
          Effect.gen(function*() {
            const id = newId("order")
            yield* Session.run(Effect.zipRight(
              Session.startStream(Order, id, [created("a", "b", "c"), new ItemReady({ name: "a" })]),
              Session.saveChanges
            ))
            resetCalls()
            const result = yield* Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForWriting(Order, id)
              assert.strictEqual(stream.version, 2)
              yield* stream.appendOne(new ItemReady({ name: "b" }))
              yield* Session.saveChanges
              return yield* Session.fetchLatest(Order, id)
            }))
            assert.deepStrictEqual(calls.loadSnapshot, [{ snapshot: true, tail: 0 }])
            assert.strictEqual(calls.readStream, 0)
            assert.deepStrictEqual(calls.commits, [{ documents: 1, inline: false }])
            assert.deepStrictEqual(Option.map(result, (o) => o.items.map((i) => i.ready)), Option.some([true, true, false]))
            const stored = yield* Session.run(Session.loadDocument(OrderInline, id))
            assert.deepStrictEqual(stored, yield* rebuild(Order, id))
          }))

        it.effect("a handler that builds a new state locally cannot corrupt the snapshot", () =>
          Effect.gen(function*() {
            const id = newId("order")
            yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
            yield* Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForWriting(Order, id)
              const order = Option.getOrThrow(stream.aggregate)
              // The handler derives its own view of the future state and decides from it...
              const local = { ...order, items: order.items.map((i) => new Item({ name: i.name, ready: true })), ready: true }
              if (local.items.every((i) => i.ready)) {
                yield* stream.appendMany([new ItemReady({ name: "a" }), new ItemReady({ name: "b" })])
              }
              yield* Session.saveChanges
            }))
            // ...but the snapshot is the fetched state folded with the events, not the handler's object.
            const stored = yield* Session.run(Session.loadDocument(OrderInline, id))
            assert.deepStrictEqual(stored, yield* rebuild(Order, id))
            assert.deepStrictEqual(Option.map(stored, (o) => [o.items.map((i) => i.ready), o.ready]), Option.some([[true, true], false]))
          }))

        it.effect("an evolve that reads sequence and timestamp gets the stored ones; the snapshot equals a rebuild", () =>
          Effect.gen(function*() {
            const id = newId("stamped")
            for (let i = 0; i < 3; i++) {
              if (i === 2) resetCalls()
              yield* Session.run(Effect.gen(function*() {
                const stream = yield* Session.fetchForWriting(Stamped, id)
                yield* stream.appendOne(i === 0 ? created("a") : new ItemReady({ name: "a" }))
                yield* Session.saveChanges
              }))
            }
            const stored = yield* Session.run(Session.loadDocument(StampedInline, id))
            const events = yield* Session.run(Session.readStream(id))
            assert.deepStrictEqual(stored, yield* rebuild(Stamped, id))
            assert.deepStrictEqual(
              Option.map(stored, (s) => [s.count, s.lastSequence, s.lastAt]),
              Option.some([3, events[2].sequence, events[2].timestamp.getTime()])
            )
            // Known to read positions, its saves compute the snapshot in the transaction, after the insert.
            assert.deepStrictEqual(calls.commits, [{ documents: 0, inline: true }])
          }))

        it.effect("a blind append (no fetch) keeps the snapshot current", () =>
          Effect.gen(function*() {
            const id = newId("order")
            yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
            yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "b" })]), Session.saveChanges))
            resetCalls()
            const stream = yield* Session.run(Session.fetchForWriting(Order, id))
            assert.deepStrictEqual(calls.loadSnapshot, [{ snapshot: true, tail: 0 }])
            assert.strictEqual(stream.version, 2)
            assert.deepStrictEqual(yield* Session.run(Session.loadDocument(OrderInline, id)), yield* rebuild(Order, id))
          }))

        it.effect("a failed save leaves the snapshot untouched", () =>
          Effect.gen(function*() {
            const id = newId("order")
            const other = newId("order")
            yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
            const before = yield* Session.run(Session.loadDocument(OrderInline, id))
            const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForWriting(Order, id)
              const second = yield* Session.fetchForWriting(Order, other)
              yield* stream.appendOne(new ItemReady({ name: "a" }))
              yield* second.appendOne(created("z"))
              // A concurrent writer moves the stream after the fetch.
              yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "b" })]), Session.saveChanges))
              return yield* Session.saveChanges
            })))
            assert.strictEqual(error._tag, "ConcurrencyError")
            assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(OrderInline, other))))
            const after = yield* Session.run(Session.loadDocument(OrderInline, id))
            assert.notDeepEqual(after, before) // the concurrent writer's save did update it
            assert.deepStrictEqual(after, yield* rebuild(Order, id))
          }))
      })

      describe("Inline multi-stream views", () => {
        it.effect("a board's providers, fed by many streams, ignoring events the view does not know", () =>
          Effect.gen(function*() {
            const board = newId("board")
            const shifts = [newId("shift"), newId("shift"), newId("shift")]
            yield* Effect.forEach(shifts, (id, i) =>
              Session.run(Effect.zipRight(
                Session.startStream(ProviderShift, id, [
                  new ProviderJoined({ boardId: board, providerId: `dr-${i}` }),
                  new ProviderReady()
                ]),
                Session.saveChanges
              )))
            const view = yield* Session.run(Session.loadDocument(Board, board))
            assert.deepStrictEqual(view, Option.some({ providers: ["dr-0", "dr-1", "dr-2"] }))
            assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(Board, newId("board")))))
          }))

        it.effect("concurrent writers of different streams updating one document lose no update", () =>
          Effect.gen(function*() {
            const board = newId("board")
            yield* Effect.forEach(Array.from({ length: 16 }, (_, i) => i), (i) =>
              Session.run(Effect.zipRight(
                Session.startStream(ProviderShift, newId("shift"), [new ProviderJoined({ boardId: board, providerId: `p${i}` })]),
                Session.saveChanges
              )), { concurrency: 8, discard: true })
            const view = Option.getOrThrow(yield* Session.run(Session.loadDocument(Board, board)))
            assert.deepStrictEqual([...view.providers].sort(), Array.from({ length: 16 }, (_, i) => `p${i}`).sort())
          }))

        it.effect("a view keyed by the stored day, and a failed save changes no view", () =>
          Effect.gen(function*() {
            const id = newId("order")
            const saved = yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a", "b")]), Session.saveChanges))
            assert.strictEqual(saved.streams[0].version, 1)
            const day = (yield* Session.run(Session.readStream(id)))[0].timestamp.toISOString().slice(0, 10)
            const before = Option.getOrThrow(yield* Session.run(Session.loadDocument(Daily, day)))
            assert.isAtLeast(before.orders, 1)
            const error = yield* Effect.flip(Session.run(Effect.zipRight(Session.startStream(Order, id, [created("c")]), Session.saveChanges)))
            assert.strictEqual(error._tag, "StreamExistsError")
            assert.deepStrictEqual(yield* Session.run(Session.loadDocument(Daily, day)), Option.some(before))
          }))
      })
    }
  )
}
