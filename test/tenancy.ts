/**
 * Tenants as a boundary, on both stores: a stream's identity is (tenant, id)
 * in every read, fetch, lock, save, snapshot and document.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, EventStore, Projection, ProjectionDaemon, Session } from "effect-chronicle"
import { Item, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

class Joined extends Schema.TaggedClass<Joined>()("TenancyJoined", { board: Schema.String, who: Schema.String }) {}
const Member = Aggregate.make({
  name: "TenancyMember",
  events: Joined,
  state: Schema.Array(Schema.String),
  initial: [] as ReadonlyArray<string>,
  evolve: (state, event) => [...state, event.who]
})
const board = (name: string, lifecycle: "Inline" | "Async") =>
  Projection.multiStream({
    name,
    events: Joined,
    state: Schema.Array(Schema.String),
    initial: [] as ReadonlyArray<string>,
    key: (envelope) => envelope.data.board,
    evolve: (state, event) => [...state, event.who],
    lifecycle
  })
const InlineBoard = board("TenancyInlineBoard", "Inline")
const AsyncBoard = board("TenancyAsyncBoard", "Async")
const OrderInline = Projection.snapshot(Order, "Inline")
const MemberAsync = Projection.snapshot(Member, "Async")

const inA = EventStore.withTenant("a")
const inB = EventStore.withTenant("b")
const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))
const versionIn = (tenant: string, id: string) =>
  EventStore.withTenant(Session.run(Effect.map(Session.readStream(id), (es) => es.map((e) => e.version))), tenant)

export const tenancy = (store: StoreUnderTest) =>
  layer(
    ProjectionDaemon.layer({ pollInterval: "50 millis" }).pipe(
      Layer.provideMerge(store.layer([OrderInline, MemberAsync, InlineBoard, AsyncBoard]))
    ),
    { excludeTestServices: true }
  )(`tenancy: ${store.name}`, (it) => {
    it.effect("two tenants each have a stream of one id, with their own versions and events", () =>
      Effect.gen(function*() {
        const id = newId("order")
        yield* inA(save(Session.startStream(Order, id, [created("x"), new OrderReady()])))
        // startStream in b of an id a uses succeeds: the id is free in b.
        yield* inB(save(Session.startStream(Order, id, [created("y")])))
        assert.deepStrictEqual(yield* versionIn("a", id), [1, 2])
        assert.deepStrictEqual(yield* versionIn("b", id), [1])
        assert.deepStrictEqual(yield* versionIn(EventStore.defaultTenant, id), [])
        const readB = yield* inB(Session.run(Session.readStream(id)))
        assert.deepStrictEqual(readB.map((e) => [e.tenantId, e.type, JSON.stringify(e.data).includes(`"y"`)]), [["b", "OrderCreated", true]])
        // b never reads a's events, whatever the read.
        const fetched = yield* inB(Session.run(Session.fetchForWriting(Order, id)))
        assert.strictEqual(fetched.version, 1)
        assert.deepStrictEqual(Option.map(fetched.aggregate, (s) => s.items.map((i) => i.name)), Option.some(["y"]))
        const latest = yield* inB(Session.run(Session.fetchLatest(Order, id)))
        assert.deepStrictEqual(Option.map(latest, (s) => s.ready), Option.some(false))
        const folded = yield* inB(Session.run(Session.aggregateStream(Order, id)))
        assert.deepStrictEqual(Option.map(folded, (s) => s.ready), Option.some(false))
        // Appends land in their own tenant's stream.
        yield* inB(save(Session.append(Order, id, [new OrderReady()])))
        assert.deepStrictEqual(yield* versionIn("a", id), [1, 2])
        assert.deepStrictEqual(yield* versionIn("b", id), [1, 2])
        // The Inline snapshot is per tenant, and loadDocument is scoped.
        const docA = yield* inA(Session.run(Session.loadDocument(OrderInline, id)))
        const docB = yield* inB(Session.run(Session.loadDocument(OrderInline, id)))
        assert.deepStrictEqual(Option.map(docA, (s) => s.items.map((i) => i.name)), Option.some(["x"]))
        assert.deepStrictEqual(Option.map(docB, (s) => s.items.map((i) => i.name)), Option.some(["y"]))
        assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(OrderInline, id))))
      }))

    it.effect("conflicts are per tenant", () =>
      Effect.gen(function*() {
        const id = newId("order")
        yield* inA(save(Session.append(Order, id, [created("x"), new OrderReady()])))
        // b expects its own version (0), not a's (2).
        yield* inB(save(Session.append(Order, id, [created("y")], { expectedVersion: 0 })))
        const stale = yield* Effect.exit(inB(save(Session.append(Order, id, [new OrderReady()], { expectedVersion: 2 }))))
        assert.deepStrictEqual(Exit.isFailure(stale) && stale.cause._tag === "Fail" ? stale.cause.error._tag : undefined, "ConcurrencyError")
        const exists = yield* Effect.exit(inB(save(Session.startStream(Order, id, [created("z")]))))
        assert.deepStrictEqual(Exit.isFailure(exists) && exists.cause._tag === "Fail" ? exists.cause.error._tag : undefined, "StreamExistsError")
        assert.deepStrictEqual(yield* versionIn("a", id), [1, 2])
        assert.deepStrictEqual(yield* versionIn("b", id), [1])
      }))

    it.effect("a's exclusive lock does not block b", () =>
      Effect.gen(function*() {
        const id = newId("order")
        yield* inA(save(Session.append(Order, id, [created("x")])))
        yield* inB(save(Session.append(Order, id, [created("y")])))
        yield* inA(Session.run(Effect.gen(function*() {
          yield* Session.fetchForExclusiveWriting(Order, id)
          // While a holds its lock, b locks and writes its own stream of the same id at once.
          yield* inB(save(Effect.flatMap(Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" }), (s) => s.appendOne(new OrderReady()))))
          // Another session of a is blocked, as before.
          const blocked = yield* Effect.exit(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "100 millis" })))
          assert.deepStrictEqual(Exit.isFailure(blocked) && blocked.cause._tag === "Fail" ? blocked.cause.error._tag : undefined, "StreamLockedError")
        })))
        assert.deepStrictEqual(yield* versionIn("b", id), [1, 2])
        assert.deepStrictEqual(yield* versionIn("a", id), [1])
      }))

    it.effect("Inline and Async multi-stream documents and Async snapshots are per tenant; the daemon projects each tenant into its own", () =>
      Effect.gen(function*() {
        const id = newId("member")
        const key = newId("board")
        yield* inA(save(Session.append(Member, id, [new Joined({ board: key, who: "a1" }), new Joined({ board: key, who: "a2" })])))
        yield* inB(save(Session.append(Member, id, [new Joined({ board: key, who: "b1" })])))
        yield* ProjectionDaemon.waitForNonStale({ timeout: "20 seconds" })
        for (const view of [InlineBoard, AsyncBoard]) {
          assert.deepStrictEqual(yield* inA(Session.run(Session.loadDocument(view, key))), Option.some(["a1", "a2"]))
          assert.deepStrictEqual(yield* inB(Session.run(Session.loadDocument(view, key))), Option.some(["b1"]))
          assert.isTrue(Option.isNone(yield* Session.run(Session.loadDocument(view, key))))
        }
        assert.deepStrictEqual(yield* inA(Session.run(Session.loadDocument(MemberAsync, id))), Option.some(["a1", "a2"]))
        assert.deepStrictEqual(yield* inB(Session.run(Session.loadDocument(MemberAsync, id))), Option.some(["b1"]))
        assert.deepStrictEqual(yield* inB(Session.run(Session.fetchLatest(Member, id))), Option.some(["b1"]))
      }))

    describe("InvalidTenantIdError", () => {
      const bad: ReadonlyArray<[string, unknown]> = [
        ["empty", ""],
        ["blank", "  \t"],
        ["over 200 characters", "t".repeat(201)],
        ["NUL", "a\u0000b"],
        ["lone surrogate", "a\uD800b"],
        ["not a string", 42]
      ]
      for (const [name, tenantId] of bad) {
        it.effect(`a ${name} tenant id fails with InvalidTenantIdError and writes nothing`, () =>
          Effect.gen(function*() {
            const id = newId("order")
            const exit = yield* Effect.exit(
              EventStore.withTenant(save(Session.append(Order, id, [created("x")])), tenantId as string)
            )
            assert.isTrue(Exit.isFailure(exit))
            if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
              const error = exit.cause.error
              assert.strictEqual(error._tag, "InvalidTenantIdError")
              if (error._tag === "InvalidTenantIdError") assert.strictEqual(error.tenantId, tenantId)
            } else assert.fail("expected a typed failure")
            assert.deepStrictEqual(yield* versionIn(EventStore.defaultTenant, id), [])
          }))
      }
      it.effect("a tenant id of 200 characters is accepted", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const tenant = "t".repeat(200)
          yield* EventStore.withTenant(save(Session.append(Order, id, [created("x")])), tenant)
          assert.deepStrictEqual(yield* versionIn(tenant, id), [1])
        }))
    })
  })
