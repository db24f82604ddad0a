/**
 * The testing kit: decider, handler and projection specifications inside
 * `it.effect` (TestClock), failing specifications reported as AssertionErrors,
 * and the test store's waits (lock time-outs, retry back-off, the daemon) not
 * stalling a test that never adjusts the clock.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import {
  ChronicleTest,
  CommandHandler,
  EventStore,
  EventStoreMemory,
  Projection,
  ProjectionDaemon,
  Projections,
  Session
} from "effect-chronicle"
import {
  createOrder,
  decideMarkItemReady,
  Item,
  ItemReady,
  markItemReady,
  MarkItemReadyHandler,
  Order,
  OrderCreated,
  OrderReady,
  OrderShipped
} from "../examples/order.js"
import { DailyOrders } from "../examples/projections.js"

const created = (...names: Array<string>) => new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })
const Mark = (orderId: string, itemName: string) => MarkItemReadyHandler({ orderId, itemName })

// A stall would hang until vitest's own time-out; these tests fail much sooner.
const quick = { timeout: 10_000 }

const EventStore_memory = () => EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer([])))

describe("ChronicleTest.given / when / then (decider specifications)", () => {
  it.effect("then: the events the handler appended", () =>
    ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]])
      .when(Mark("order-1", "kettle"))
      .then([new ItemReady({ name: "kettle" })]))

  it.effect("then: several events, compared structurally (nested arrays and classes included)", () =>
    Effect.gen(function*() {
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle", "cups"), new ItemReady({ name: "cups" })]]])
        .when(Mark("order-1", "kettle"))
        .then([new ItemReady({ name: "kettle" }), new OrderReady()])
      // A new stream: the events of a create command, with nested Schema classes.
      yield* ChronicleTest.given(Order, []).when(createOrder("order-2", ["kettle"])).then([created("kettle")])
    }))

  it.effect("then: an idempotent command appends nothing", () =>
    ChronicleTest.given(Order, [["order-1", [created("kettle"), new ItemReady({ name: "kettle" })]]])
      .when(Mark("order-1", "kettle"))
      .then([]))

  it.effect("thenFails: by error tag, and by predicate", () =>
    Effect.gen(function*() {
      yield* ChronicleTest.given(Order, []).when(Mark("order-1", "kettle")).thenFails("OrderNotFound")
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle")]]])
        .when(Mark("order-1", "teapot"))
        .thenFails((error) => error._tag === "UnknownItem" && error.itemName === "teapot")
    }))

  it.effect("thenState: the plain state after the new events", () =>
    ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]])
      .when(Mark("order-1", "cups"))
      .thenState({
        items: [new Item({ name: "kettle", ready: false }), new Item({ name: "cups", ready: true })],
        ready: false,
        shipped: false
      }))

  it.effect("thenState of a named stream, among several given", () =>
    ChronicleTest.given(Order, [["order-1", [created("kettle")]], ["order-2", [created("cups"), new OrderShipped()]]])
      .when(Effect.void)
      .thenState({ items: [new Item({ name: "cups", ready: false })], ready: false, shipped: true }, "order-2"))

  it.effect("when takes a Session workflow that saves, and a decide function wrapped in writeToAggregate", () =>
    Effect.gen(function*() {
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle")]]])
        .when(markItemReady({ orderId: "order-1", itemName: "kettle" }))
        .then([new ItemReady({ name: "kettle" }), new OrderReady()])
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]])
        .when(EventStore.writeToAggregate(Order, "order-1", (stream) =>
          Effect.flatMap(decideMarkItemReady({ orderId: "order-1", itemName: "cups" }, stream.aggregate), stream.appendMany)))
        .then([new ItemReady({ name: "cups" })])
    }))

  it.effect("thenSucceeds: the command's result and events", () =>
    ChronicleTest.given(Order, [["order-1", [created("kettle")]]])
      .when(Mark("order-1", "kettle"))
      .thenSucceeds((result, events) => {
        assert.strictEqual(result.version, 3)
        assert.strictEqual(events.length, 2)
      }))

  it.effect("each specification runs on a fresh store", () =>
    Effect.gen(function*() {
      const spec = ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]]).when(Mark("order-1", "kettle"))
      yield* spec.then([new ItemReady({ name: "kettle" })])
      yield* spec.then([new ItemReady({ name: "kettle" })])
    }))
})

describe("failing specifications fail with a readable AssertionError", () => {
  it.effect("then: other events than expected (expected and actual shown)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]])
          .when(Mark("order-1", "kettle"))
          .then([new ItemReady({ name: "cups" })])
      )
      assert.strictEqual(error._tag, "AssertionError")
      assert.instanceOf(error, ChronicleTest.AssertionError)
      assert.deepStrictEqual(error.expected, [new ItemReady({ name: "cups" })])
      assert.deepStrictEqual(error.actual, [new ItemReady({ name: "kettle" })])
      assert.include(error.message, "appended other events than expected")
      assert.include(error.message, `"name": "cups"`)
      assert.include(error.message, `"name": "kettle"`)
    }))

  it.effect("what vitest receives keeps expected and actual beside the message, for its diff", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        ChronicleTest.given(Order, [["order-1", [created("kettle")]]]).when(Mark("order-1", "kettle")).then([])
      )
      // @effect/vitest throws the first of Cause.prettyErrors of a failed test.
      const [thrown] = Cause.prettyErrors(Cause.fail(error)) as Array<Error & { expected?: unknown; actual?: unknown }>
      assert.include(thrown.message, "The command appended other events than expected.")
      assert.deepStrictEqual(thrown.expected, [])
      assert.deepStrictEqual(thrown.actual, [new ItemReady({ name: "kettle" }), new OrderReady()])
    }))

  it.effect("then: the command failed instead", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ChronicleTest.given(Order, []).when(Mark("order-1", "kettle")).then([]))
      assert.include(error.message, "Expected the command to succeed")
      assert.include(error.message, "OrderNotFound")
      assert.strictEqual((error.actual as { _tag: string })._tag, "OrderNotFound")
    }))

  it.effect("thenFails: the command succeeded, or failed otherwise", () =>
    Effect.gen(function*() {
      const succeeded = yield* Effect.flip(
        ChronicleTest.given(Order, [["order-1", [created("kettle")]]]).when(Mark("order-1", "kettle")).thenFails("UnknownItem")
      )
      assert.include(succeeded.message, `Expected a failure tagged "UnknownItem", but it succeeded, appending`)
      const otherwise = yield* Effect.flip(ChronicleTest.given(Order, []).when(Mark("order-1", "kettle")).thenFails("UnknownItem"))
      assert.include(otherwise.message, "but it failed with")
      assert.include(otherwise.message, "OrderNotFound")
      const rejected = yield* Effect.flip(ChronicleTest.given(Order, []).when(Mark("order-1", "kettle")).thenFails(() => false))
      assert.include(rejected.message, "a failure the predicate accepts")
    }))

  it.effect("thenState: another state, and no state at all", () =>
    Effect.gen(function*() {
      const other = yield* Effect.flip(
        ChronicleTest.given(Order, [["order-1", [created("kettle")]]])
          .when(Mark("order-1", "kettle"))
          .thenState({ items: [], ready: false, shipped: false })
      )
      assert.include(other.message, `Stream "order-1" is not in the expected state.`)
      assert.deepStrictEqual((other.actual as { ready: boolean }).ready, true)
      const none = yield* Effect.flip(
        ChronicleTest.given(Order, []).when(Effect.void).thenState({ items: [], ready: false, shipped: false }, "order-9")
      )
      assert.include(none.message, `Stream "order-9" has no events`)
      const ambiguous = yield* Effect.flip(
        ChronicleTest.given(Order, [["a", [created("x")]], ["b", [created("y")]]]).when(Effect.void)
          .thenState({ items: [], ready: false, shipped: false })
      )
      assert.include(ambiguous.message, "name the stream")
    }))

  it.effect("thenSucceeds: a throwing check is a failure of the spec", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        ChronicleTest.given(Order, [["order-1", [created("kettle")]]]).when(Mark("order-1", "kettle")).thenSucceeds(() => {
          assert.strictEqual(1, 2)
        })
      )
      assert.isTrue(exit._tag === "Failure")
    }))

  it.effect("a given history the store refuses is a defect naming it", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(ChronicleTest.given(Order, [["", [created("x")]]]).when(Effect.void).then([]))
      assert.isTrue(exit._tag === "Failure" && String(exit.cause).includes("the given events of Order could not be written"))
    }))
})

describe("the test store does not stall under TestClock", () => {
  // The first try meets a concurrent writer, so its save conflicts and the command retries after a back-off.
  const conflictingOnce = (retry: Schedule.Schedule<any, any>) => {
    let attempts = 0
    const command = EventStore.writeToAggregate(Order, "order-1", (stream) =>
      Effect.gen(function*() {
        if (attempts++ === 0) {
          yield* Session.run(Effect.zipRight(Session.append(Order, "order-1", [new ItemReady({ name: "cups" })]), Session.saveChanges))
        }
        yield* stream.appendOne(new ItemReady({ name: "kettle" }))
      }), { retry })
    return { command, attempts: () => attempts }
  }
  const backOff = Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(3)))

  it.effect("a command that conflicts once retries with exponential back-off and completes, the clock never adjusted", () =>
    Effect.gen(function*() {
      const { attempts, command } = conflictingOnce(backOff)
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle", "cups")]]])
        .when(command)
        .then([new ItemReady({ name: "cups" }), new ItemReady({ name: "kettle" })])
      assert.strictEqual(attempts(), 2)
    }), quick)

  it.effect("CommandHandler's retry too", () =>
    Effect.gen(function*() {
      let attempts = 0
      const Handler = CommandHandler.make(Order, {
        id: (cmd: { readonly orderId: string }) => cmd.orderId,
        decide: (cmd, state) =>
          Effect.gen(function*() {
            if (attempts++ === 0) yield* Session.run(Effect.zipRight(Session.append(Order, cmd.orderId, [new OrderShipped()]), Session.saveChanges))
            return Option.isSome(state) && !state.value.ready ? [new OrderReady()] : []
          }),
        retry: backOff
      })
      yield* ChronicleTest.given(Order, [["order-1", [created("kettle")]]])
        .when(Handler({ orderId: "order-1" }))
        .thenState({ items: [new Item({ name: "kettle", ready: false })], ready: true, shipped: true })
      assert.strictEqual(attempts, 2)
    }), quick)

  it.effect("the plain in-memory store honours TestClock instead: the retry waits for TestClock.adjust", () =>
    Effect.gen(function*() {
      const { attempts, command } = conflictingOnce(backOff)
      yield* createOrder("order-1", ["kettle", "cups"])
      const fiber = yield* Effect.fork(command)
      for (let i = 0; i < 50; i++) yield* Effect.yieldNow()
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the retry waits on the test clock")
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(fiber)
      assert.strictEqual(result.version, 3)
      assert.strictEqual(attempts(), 2)
    }).pipe(Effect.provide(EventStore_memory())), quick)

  it.effect("an exclusive fetch of a locked stream times out with StreamLockedError", () =>
    Effect.gen(function*() {
      const locked = yield* Deferred.make<void>()
      yield* Effect.fork(Session.run(Effect.gen(function*() {
        yield* Session.fetchForExclusiveWriting(Order, "order-1")
        yield* Deferred.succeed(locked, undefined)
        yield* Effect.never
      })))
      yield* Deferred.await(locked)
      const error = yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, "order-1", { timeout: "100 millis" })))
      assert.strictEqual(error._tag, "StreamLockedError")
      assert.strictEqual((error as { timeoutMillis: number }).timeoutMillis, 100)
    }).pipe(Effect.provide(ChronicleTest.layer())), quick)

  it.effect("in a specification: an exclusive handler on a stream held by another session fails with StreamLockedError", () => {
    const Ship = CommandHandler.make(Order, {
      id: (cmd: { readonly orderId: string }) => cmd.orderId,
      decide: () => [new OrderShipped()],
      exclusive: true
    })
    const heldElsewhere = Effect.gen(function*() {
      const locked = yield* Deferred.make<void>()
      yield* Effect.fork(Session.run(Effect.zipRight(
        Effect.zipRight(Session.fetchForExclusiveWriting(Order, "order-1"), Deferred.succeed(locked, undefined)),
        Effect.never
      )))
      yield* Deferred.await(locked)
      return yield* Ship({ orderId: "order-1" })
    })
    return ChronicleTest.given(Order, [["order-1", [created("kettle")]]], { store: { lockTimeout: "150 millis" } })
      .when(heldElsewhere)
      .thenFails("StreamLockedError")
  }, quick)

  it.effect("event timestamps still come from the test clock", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("36 hours")
      yield* createOrder("order-1", ["kettle"])
      const [envelope] = yield* Session.run(Session.readStream(Order, "order-1"))
      assert.strictEqual(envelope.timestamp.toISOString(), "1970-01-02T12:00:00.000Z")
    }).pipe(Effect.provide(ChronicleTest.layer())))

  it.effect("Async projections run through the layer's daemon, and waitForNonStale returns", () =>
    Effect.gen(function*() {
      yield* createOrder("order-1", ["kettle", "cups"])
      yield* createOrder("order-2", ["teapot"])
      yield* ProjectionDaemon.waitForNonStale({ timeout: "5 seconds" })
      const day = yield* Session.run(Session.loadDocument(DailyOrders, "1970-01-01"))
      assert.deepStrictEqual(day, Option.some({ orders: 2, items: 3 }))
    }).pipe(Effect.provide(ChronicleTest.layer([DailyOrders]))), quick)
})


const ReadyItems = Projection.multiStream({
  name: "ReadyItems",
  events: ItemReady,
  state: Schema.Struct({ times: Schema.Number }),
  initial: { times: 0 },
  key: (envelope) => envelope.data.name,
  evolve: (item) => ({ times: item.times + 1 }),
  lifecycle: "Inline"
})

describe("ChronicleTest.projection (projection specifications)", () => {
  const order = (names: Array<string>) => ({ items: names.map((name) => new Item({ name, ready: false })), ready: false, shipped: false })

  it.effect("an Inline multi-stream projection: given events on several streams, then the document", () =>
    ChronicleTest.projection(ReadyItems)
      .given(Order, [["order-1", [created("kettle"), new ItemReady({ name: "kettle" })]], ["order-2", [created("kettle", "cups")]]])
      .given(Order, [["order-2", [new ItemReady({ name: "kettle" })]]])
      .then("kettle", { times: 2 }))

  it.effect("an Async multi-stream projection is caught up by the daemon first", () =>
    ChronicleTest.projection(DailyOrders)
      .given(Order, [["order-1", [created("kettle", "cups")]], ["order-2", [created("teapot")]]])
      .then("1970-01-01", { orders: 2, items: 3 }), quick)

  it.effect("snapshots, Inline, Async and Live", () =>
    Effect.gen(function*() {
      for (const lifecycle of ["Inline", "Async", "Live"] as const) {
        yield* ChronicleTest.projection(Projection.snapshot(Order, lifecycle))
          .given(Order, [["order-1", [created("kettle")]]])
          .then("order-1", order(["kettle"]))
      }
    }), quick)

  it.effect("thenMissing: no document under the key", () =>
    ChronicleTest.projection(ReadyItems).given(Order, [["order-1", [created("kettle")]]]).thenMissing("kettle"))

  it.effect("a failing projection specification fails with an AssertionError", () =>
    Effect.gen(function*() {
      const spec = ChronicleTest.projection(ReadyItems).given(Order, [["order-1", [created("kettle"), new ItemReady({ name: "kettle" })]]])
      const wrong = yield* Effect.flip(spec.then("kettle", { times: 5 }))
      assert.include(wrong.message, `Document "kettle" of projection ReadyItems is not the expected one.`)
      assert.deepStrictEqual(wrong.actual, { times: 1 })
      assert.deepStrictEqual(wrong.expected, { times: 5 })
      const missing = yield* Effect.flip(spec.then("cups", { times: 1 }))
      assert.include(missing.message, `has no document "cups"`)
      const present = yield* Effect.flip(spec.thenMissing("kettle"))
      assert.include(present.message, "to have no document")
    }))
})
