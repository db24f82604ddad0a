/**
 * EventStore.listStreams on both stores: newest first, paged by page or by
 * cursor, filtered by type, scoped to the tenant, bad options refused.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { Aggregate, EventStore, Session } from "effect-chronicle"
import { Item, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

class Opened extends Schema.TaggedClass<Opened>()("ListingOpened", {}) {}
const Ledger = Aggregate.make({ name: `Ledger${Math.random().toString(36).slice(2, 6)}`, events: Opened, initial: 0, evolve: (n) => n + 1 })

const created = new OrderCreated({ items: [new Item({ name: "kettle", ready: false })] })
const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))
const failure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(effect), (exit) => Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined)

export const streamList = (store: StoreUnderTest) =>
  layer(store.layer([]), { excludeTestServices: true })(`listStreams: ${store.name}`, (it) => {
    // Each test runs in a tenant of its own, so that its streams are the only ones it lists.
    const inTenant = <A, E, R>(effect: Effect.Effect<A, E, R>) => EventStore.withTenant(effect, newId("listing"))

    it.effect("lists newest first, with type, version and times; pages by page and by cursor", () =>
      inTenant(Effect.gen(function*() {
        const ids = Array.from({ length: 5 }, (_, i) => newId(`order${i}`))
        for (const id of ids) yield* save(Session.startStream(Order, id, [created]))
        // A later event does not make a stream newer: streams are ordered by their first event.
        yield* save(Session.append(Order, ids[0], [new OrderReady()]))
        const all = yield* EventStore.listStreams()
        assert.deepStrictEqual(all.streams.map((s) => s.streamId), [...ids].reverse())
        assert.isFalse(all.more)
        const oldest = all.streams[4]
        assert.strictEqual(oldest.streamType, "Order")
        assert.strictEqual(oldest.version, 2)
        assert.isTrue(oldest.updatedAt.getTime() >= oldest.createdAt.getTime())
        assert.isTrue(all.streams[0].sequence > all.streams[1].sequence)

        const first = yield* EventStore.listStreams({ limit: 2 })
        assert.deepStrictEqual(first.streams.map((s) => s.streamId), [ids[4], ids[3]])
        assert.isTrue(first.more)
        const second = yield* EventStore.listStreams({ limit: 2, page: 2 })
        assert.deepStrictEqual(second.streams.map((s) => s.streamId), [ids[2], ids[1]])
        const third = yield* EventStore.listStreams({ limit: 2, page: 3 })
        assert.deepStrictEqual(third.streams.map((s) => s.streamId), [ids[0]])
        assert.isFalse(third.more)
        const cursor = yield* EventStore.listStreams({ limit: 2, after: ids[3] })
        assert.deepStrictEqual(cursor.streams.map((s) => s.streamId), [ids[2], ids[1]])
        assert.isTrue(cursor.more)
      })))

    it.effect("says which streams are archived", () =>
      inTenant(Effect.gen(function*() {
        const kept = newId("order")
        const archived = newId("order")
        yield* save(Session.startStream(Order, kept, [created]))
        yield* save(Session.startStream(Order, archived, [created]))
        yield* save(Session.archiveStream(archived))
        const all = yield* EventStore.listStreams()
        assert.deepStrictEqual(all.streams.map((s) => [s.streamId, s.archived]), [[archived, true], [kept, false]])
      })))

    it.effect("filters by stream type", () =>
      inTenant(Effect.gen(function*() {
        const order = newId("order")
        const ledger = newId("ledger")
        yield* save(Session.startStream(Order, order, [created]))
        yield* save(Session.startStream(Ledger, ledger, [new Opened()]))
        const orders = yield* EventStore.listStreams({ streamType: "Order" })
        assert.deepStrictEqual(orders.streams.map((s) => s.streamId), [order])
        const ledgers = yield* EventStore.listStreams({ streamType: Ledger.name })
        assert.deepStrictEqual(ledgers.streams.map((s) => [s.streamId, s.streamType]), [[ledger, Ledger.name]])
        assert.deepStrictEqual((yield* EventStore.listStreams({ streamType: "Nothing" })).streams, [])
      })))

    it.effect("a stream only locked (no events) is not listed", () =>
      inTenant(Effect.gen(function*() {
        const id = newId("locked")
        yield* Session.run(Session.fetchForExclusiveWriting(Order, id))
        assert.deepStrictEqual((yield* EventStore.listStreams()).streams, [])
      })))

    it.effect("lists only the current tenant's streams", () =>
      Effect.gen(function*() {
        const a = newId("tenant-a")
        const b = newId("tenant-b")
        const id = newId("order")
        yield* EventStore.withTenant(save(Session.startStream(Order, id, [created])), a)
        const inA = yield* EventStore.withTenant(EventStore.listStreams(), a)
        assert.deepStrictEqual(inA.streams.map((s) => [s.streamId, s.tenantId]), [[id, a]])
        assert.deepStrictEqual((yield* EventStore.withTenant(EventStore.listStreams(), b)).streams, [])
        // A cursor of another tenant's stream names no stream here.
        const error = yield* failure(EventStore.withTenant(EventStore.listStreams({ after: id }), b))
        assert.strictEqual(error?._tag, "InvalidOptionError")
      }))

    describe("bad options fail with a typed error naming them", () => {
      const cases: ReadonlyArray<[string, EventStore.ListStreamsOptions, string]> = [
        ["limit 0", { limit: 0 }, "limit"],
        ["limit 1.5", { limit: 1.5 }, "limit"],
        ["limit 1001", { limit: 1001 }, "limit"],
        ["page 0", { page: 0 }, "page"],
        ["page NaN", { page: Number.NaN }, "page"],
        ["empty type", { streamType: "" }, "streamType"],
        ["type with NUL", { streamType: "a\u0000" }, "streamType"],
        ["unknown cursor", { after: "no-such-stream" }, "after"]
      ]
      for (const [name, options, option] of cases) {
        it.effect(name, () =>
          inTenant(Effect.gen(function*() {
            const error = yield* failure(EventStore.listStreams(options))
            assert.strictEqual(error?._tag, "InvalidOptionError")
            assert.strictEqual((error as { option?: string }).option, option)
          })))
      }
      it.effect("an invalid cursor id", () =>
        inTenant(Effect.gen(function*() {
          const error = yield* failure(EventStore.listStreams({ after: "" }))
          assert.strictEqual(error?._tag, "InvalidStreamIdError")
        })))
    })
  })
