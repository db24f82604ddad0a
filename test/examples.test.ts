/**
 * The examples in `examples/` run as tests on both stores, so they never rot.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Layer from "effect/Layer"
import { ProjectionDaemon, Session } from "effect-chronicle"
import { inject } from "vitest"
import { FreightShipment, PickUpHandler, ShipmentScheduled } from "../examples/freight-shipment.js"
import {
  createOrder,
  ItemReady,
  markItemReady,
  markItemReadyAtVersion,
  markItemReadyExclusively,
  markItemReadyWithWriteToAggregate,
  MarkItemReadyHandler,
  Order
} from "../examples/order.js"
import { program } from "../examples/order-fulfilment.js"
import * as notifications from "../examples/order-notifications.js"
import * as projectionsExample from "../examples/projections.js"
import * as tracingExample from "../examples/tracing.js"
import {
  ChartingStarted,
  completeCharting,
  CompleteChartingHandler,
  PatientAssigned,
  ProviderJoined,
  ProviderShift
} from "../examples/provider-shift.js"
import { runsMain as runsHttpMain } from "./http.js"
import { memoryStore, newId, pgStore } from "./support.js"

const readyOf = (id: string) =>
  Effect.map(Session.run(Session.fetchLatest(Order, id)), Option.map((o) => ({
    items: o.items.map((i) => i.ready),
    ready: o.ready
  })))

for (const store of [memoryStore, pgStore()]) {
  layer(
    ProjectionDaemon.layer({ pollInterval: "100 millis" }).pipe(Layer.provideMerge(store.layer(projectionsExample.registrations))),
    { excludeTestServices: true }
  )(`projections example on ${store.name}`, (it) => {
    it.effect("an Inline snapshot equal to the fold, an Async view caught up, and a rebuild with progress", () =>
      Effect.gen(function*() {
        const result = yield* projectionsExample.program
        assert.deepStrictEqual(result.snapshot, result.folded)
        assert.deepStrictEqual(Option.map(result.snapshot, (o) => o.items.map((i) => i.ready)), Option.some([true, false]))
        assert.isAtLeast(result.daily.orders, 5)
        assert.deepStrictEqual(result.rebuilt, result.daily)
        const last = Option.getOrThrow(result.progress)
        assert.strictEqual(last.processed, last.total)
      }))
  })

  const prefix = newId("notify")
  layer(
    store.layer(notifications.registrations as any).pipe(Layer.provideMerge(notifications.services(`customer-of-${prefix}-a`))),
    { excludeTestServices: true }
  )(`order-notifications example on ${store.name}`, (it) => {
    it.effect("mails each shipped order once (idempotent through a lost answer), dead-letters a bounce, publishes in commit order", () =>
      Effect.gen(function*() {
        const result = yield* notifications.program(prefix)
        // Order a's answer was lost after sending: the retry found the key and sent nothing again.
        assert.deepStrictEqual(result.sent.map((m) => m.to).sort(), [
          `customer-of-${prefix}-a@example.com`,
          `customer-of-${prefix}-c@example.com`
        ])
        assert.strictEqual(new Set(result.sent.map((m) => m.key)).size, 2)
        assert.strictEqual(result.deadLetters.length, 1)
        assert.strictEqual(result.deadLetters[0].envelope.streamId, `${prefix}-bounce`)
        assert.strictEqual(result.deadLetters[0].envelope.type, "OrderShipped")
        assert.include(result.deadLetters[0].error, "no such mailbox")
        assert.deepStrictEqual(result.published.map((e) => [e.type, e.orderId]), result.orders.flatMap((id) => [
          ["order.ready", id],
          ["order.shipped", id]
        ]))
        const sequences = result.published.map((e) => e.sequence)
        assert.deepStrictEqual(sequences, [...sequences].sort((a, b) => a - b))
      }))
  })

  layer(store.layer([]), { excludeTestServices: true })(`examples on ${store.name}`, (it) => {
    it.effect("tracing: one command's span tree, exported through OpenTelemetry, holds two attempts, the first failed", () =>
      Effect.gen(function*() {
        const { lines: all } = yield* tracingExample.program
        // The store's own spans (on PostgreSQL, @effect/sql's statement spans where it runs them) sit beside these.
        const lines = all.filter((l) => l.trim().startsWith("chronicle."))
        const names = lines.map((l) => l.trim().split(" ")[0])
        assert.deepStrictEqual(names, [
          "chronicle.command",
          "chronicle.command.attempt",
          "chronicle.fetchForWriting",
          "chronicle.saveChanges",
          "chronicle.saveChanges",
          "chronicle.command.attempt",
          "chronicle.fetchForWriting",
          "chronicle.saveChanges"
        ])
        assert.match(lines[1], /^ {2}chronicle\.command\.attempt .*attempt=1.* FAILED ConcurrencyError$/)
        assert.match(lines[5], /^ {2}chronicle\.command\.attempt .*attempt=2\)$/)
        assert.match(lines[6], /^ {4}chronicle\.fetchForWriting .*version=2/)
        // Under each operation, the statements it ran: PostgreSQL's only, each named.
        const statements = all.filter((l) => l.trim().startsWith("sql.execute"))
        if (store.name === "memory") assert.deepStrictEqual(statements, [])
        else {
          const last = all.slice(all.lastIndexOf(lines[7]))
          assert.deepStrictEqual(last.slice(1).map((l) => l.trim()), ["sql.execute (statement=save_exact_plain_one)"])
          for (const l of statements) assert.match(l, /^ {6}sql\.execute \(statement=\w+\)$/)
        }
      }))

    it.effect("order-fulfilment tells its whole story", () =>
      Effect.gen(function*() {
        const result = yield* program
        assert.strictEqual(result.attempts, 2)
        assert.match(result.log[2], /stale command rejected: ConcurrencyError \(expected 1, actual 2\)/)
        assert.match(result.log[6], /cups ready after 2 attempts: version 6/)
        assert.match(result.log[7], /StreamLockedError after 300 ms/)
        assert.match(result.log[9], /holds 7 events: 1:OrderCreated, 2:ItemReady, 3:ItemReady, 4:ItemReady, 5:ItemReady, 6:OrderReady, 7:OrderShipped/)
        assert.deepStrictEqual(Option.map(result.finalState, (o) => [o.ready, o.shipped]), Option.some([true, true]))
      }))

    describe("Order: MarkItemReady in four forms", () => {
      it.effect("plain: marks the item; the last one also makes the order ready; rejections are typed", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* createOrder(id, ["a", "b"])
          yield* markItemReady({ orderId: id, itemName: "a" })
          assert.deepStrictEqual(yield* readyOf(id), Option.some({ items: [true, false], ready: false }))
          yield* markItemReady({ orderId: id, itemName: "b" })
          assert.deepStrictEqual(yield* readyOf(id), Option.some({ items: [true, true], ready: true }))
          const unknown = yield* Effect.flip(markItemReady({ orderId: id, itemName: "zzz" }))
          assert.deepInclude(unknown, { _tag: "UnknownItem", itemName: "zzz" })
          const missing = yield* Effect.flip(markItemReady({ orderId: newId("none"), itemName: "a" }))
          assert.strictEqual(missing._tag, "OrderNotFound")
          // Marking a ready item again appends nothing.
          const again = yield* markItemReady({ orderId: id, itemName: "a" })
          assert.deepStrictEqual(again.streams, [])
        }))

      it.effect("expected version: the command's version must match at fetch", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* createOrder(id, ["a", "b"])
          const stale = yield* Effect.flip(markItemReadyAtVersion({ orderId: id, itemName: "a", version: 0 }))
          assert.deepInclude(stale, { _tag: "ConcurrencyError", expectedVersion: 0, actualVersion: 1 })
          const saved = yield* markItemReadyAtVersion({ orderId: id, itemName: "a", version: 1 })
          assert.strictEqual(saved.streams[0].version, 2)
        }))

      it.effect("exclusive: waits for the lock holder, then decides on its result", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* createOrder(id, ["a", "b"])
          const result = yield* Session.run(Effect.gen(function*() {
            const held = yield* Session.fetchForExclusiveWriting(Order, id)
            const waiting = yield* Effect.fork(markItemReadyExclusively({ orderId: id, itemName: "b" }))
            yield* Effect.sleep("100 millis")
            yield* held.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
            return yield* Fiber.join(waiting)
          }))
          // b was decided after a: the handler saw a ready and made the order ready.
          assert.strictEqual(result.streams[0].version, 4)
          assert.deepStrictEqual(yield* readyOf(id), Option.some({ items: [true, true], ready: true }))
        }))

      it.effect("writeToAggregate: returns the new state without another read", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* createOrder(id, ["a"])
          const result = yield* markItemReadyWithWriteToAggregate({ orderId: id, itemName: "a", version: 1 })
          assert.strictEqual(result.version, 3)
          assert.deepStrictEqual(result.events.map((e) => e._tag), ["ItemReady", "OrderReady"])
          assert.deepStrictEqual(Option.map(result.state, (o) => o.ready), Option.some(true))
        }))

      it.effect("the handler with retry: four items marked concurrently, each once, one OrderReady", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const names = ["a", "b", "c", "d"]
          yield* createOrder(id, names)
          yield* Effect.forEach(names, (itemName) => MarkItemReadyHandler({ orderId: id, itemName }), {
            concurrency: "unbounded",
            discard: true
          })
          const events = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => e.type).sort(), [
            "ItemReady",
            "ItemReady",
            "ItemReady",
            "ItemReady",
            "OrderCreated",
            "OrderReady"
          ])
          assert.strictEqual(events[events.length - 1].type, "OrderReady")
        }))
    })

    describe("ProviderShift: CompleteCharting", () => {
      const startCharting = (id: string) =>
        Session.run(Effect.gen(function*() {
          yield* Session.startStream(ProviderShift, id, [
            new ProviderJoined({ boardId: "board-1", providerId: "dr-who" }),
            new PatientAssigned({ patientId: "p-1" }),
            new ChartingStarted()
          ])
          yield* Session.saveChanges
        }))

      it.effect("completes charting at the right version; stale and not-charting commands are rejected", () =>
        Effect.gen(function*() {
          const id = newId("shift")
          yield* startCharting(id)
          const stale = yield* Effect.flip(completeCharting({ shiftId: id, version: 2 }))
          assert.deepInclude(stale, { _tag: "ConcurrencyError", expectedVersion: 2, actualVersion: 3 })
          yield* completeCharting({ shiftId: id, version: 3 })
          const shift = yield* Session.run(Session.fetchLatest(ProviderShift, id))
          assert.deepStrictEqual(Option.map(shift, (s) => s.status), Option.some("Paused"))
          const notCharting = yield* Effect.flip(completeCharting({ shiftId: id, version: 4 }))
          assert.deepInclude(notCharting, { _tag: "NotCharting", status: "Paused" })
        }))

      it.effect("the decider form behaves the same", () =>
        Effect.gen(function*() {
          const id = newId("shift")
          yield* startCharting(id)
          const result = yield* CompleteChartingHandler({ shiftId: id, version: 3 })
          assert.strictEqual(result.version, 4)
          assert.deepStrictEqual(Option.map(result.state, (s) => s.status), Option.some("Paused"))
          const again = yield* Effect.flip(CompleteChartingHandler({ shiftId: id, version: 4 }))
          assert.strictEqual(again._tag, "NotCharting")
        }))
    })

    describe("FreightShipment: PickUp with retry", () => {
      it.effect("five concurrent pick-ups: one lands, the others are rejected on the fresh state", () =>
        Effect.gen(function*() {
          const id = newId("shipment")
          yield* Session.run(Effect.zipRight(
            Session.startStream(FreightShipment, id, [new ShipmentScheduled({ origin: "Rotterdam", destination: "Lyon" })]),
            Session.saveChanges
          ))
          const at = new Date("2026-11-22T10:00:00.000Z")
          const results = yield* Effect.forEach(
            [0, 1, 2, 3, 4],
            () => Effect.either(PickUpHandler({ shipmentId: id, at })),
            { concurrency: "unbounded" }
          )
          const ok = results.filter((r) => r._tag === "Right")
          const rejected = results.filter((r) => r._tag === "Left").map((r) => (r as any).left._tag)
          assert.strictEqual(ok.length, 1)
          assert.deepStrictEqual(rejected, ["CannotPickUp", "CannotPickUp", "CannotPickUp", "CannotPickUp"])
          const shipment = Option.getOrThrow(yield* Session.run(Session.fetchLatest(FreightShipment, id)))
          assert.strictEqual(shipment.status, "InTransit")
          assert.strictEqual(shipment.pickedUpAt?.toISOString(), at.toISOString())
          assert.strictEqual((yield* Session.run(Session.readStream(id))).length, 2)
        }))
    })
  })
}

// The HTTP example's endpoints are tested in test/http.test.ts; here its main runs as a process.
describe("http-orders example main", () => {
  for (const store of ["memory", "postgres"] as const) {
    it.live(`serves on ${store} until SIGINT, then exits cleanly`, () =>
      Effect.gen(function*() {
        const run = yield* runsHttpMain(store, inject("databaseUrl"))
        assert.include(run.output, store === "memory" ? "Using the in-memory store" : "Using DATABASE_URL")
        assert.deepStrictEqual([run.created, run.got, run.etag], [201, 200, "\"1\""])
        assert.deepInclude(run.body, { version: 1, ready: false })
        assert.strictEqual(run.code, 0)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  }
})
