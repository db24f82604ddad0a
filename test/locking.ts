/**
 * Locks under faults, run unchanged against both stores: deadlocks are
 * DeadlockError (and retried), and interrupting exclusive fetches at random
 * points never leaves a stream locked.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import { CommandHandler, EventStore, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

const seed = (id: string) => Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b")]), Session.saveChanges))

// Two sessions lock a then b, and b then a; each waits for the other's second lock.
const crossed = (a: string, b: string, latch: Effect.Latch, arrived: { count: number }) =>
  Session.run(Effect.gen(function*() {
    const first = yield* Session.fetchForExclusiveWriting(Order, a, { timeout: "3 seconds" })
    arrived.count++
    if (arrived.count === 2) yield* latch.open
    yield* latch.await
    yield* Session.fetchForExclusiveWriting(Order, b, { timeout: "3 seconds" })
    yield* first.appendOne(new ItemReady({ name: "a" }))
    return yield* Session.saveChanges
  }))

export const locking = (store: StoreUnderTest) =>
  layer(store.layer([]), { excludeTestServices: true })(`locks under faults: ${store.name}`, (it) => {
    describe("deadlocks", () => {
      it.effect("two sessions locking two streams in opposite order: one gets DeadlockError at once, the other saves", () =>
        Effect.gen(function*() {
          const a = newId("order")
          const b = newId("order")
          yield* seed(a)
          yield* seed(b)
          const latch = yield* Effect.makeLatch(false)
          const arrived = { count: 0 }
          const started = Date.now()
          const results = yield* Effect.all([
            Effect.exit(crossed(a, b, latch, arrived)),
            Effect.exit(crossed(b, a, latch, arrived))
          ], { concurrency: 2 })
          const failures = results.filter(Exit.isFailure)
          assert.strictEqual(failures.length, 1, "exactly one session is the deadlock's victim")
          const failure = failures[0]
          assert.isTrue(Exit.isFailure(failure))
          if (Exit.isFailure(failure)) {
            const error = failure.cause._tag === "Fail" ? failure.cause.error : undefined
            assert.strictEqual((error as { _tag?: string } | undefined)?._tag, "DeadlockError", String(failure.cause))
            assert.match((error as Error).message, /Deadlock/)
          }
          // Not a lock time-out: it ends well before the 3 s the fetches would wait.
          assert.isBelow(Date.now() - started, 2900)
          const versions = yield* Effect.all([a, b].map((id) => Session.run(Session.readStream(id))))
          assert.strictEqual(versions[0].length + versions[1].length, 3, "only the survivor's event was written")
        }))

      it.effect("writeToAggregate and CommandHandler retry a DeadlockError like a conflict", () =>
        Effect.gen(function*() {
          const a = newId("order")
          const b = newId("order")
          yield* seed(a)
          yield* seed(b)
          const latch = yield* Effect.makeLatch(false)
          const arrived = { count: 0 }
          // Each command locks its own stream, waits for the other, then locks the other's.
          const command = (mine: string, other: string) =>
            EventStore.writeToAggregate(Order, mine, (stream) =>
              Effect.gen(function*() {
                arrived.count++
                if (arrived.count === 2) yield* latch.open
                yield* latch.await
                yield* Session.fetchForExclusiveWriting(Order, other, { timeout: "3 seconds" })
                yield* stream.appendOne(new ItemReady({ name: "a" }))
              }), { exclusive: true, retry: Schedule.recurs(3) })
          const [x, y] = yield* Effect.all([command(a, b), command(b, a)], { concurrency: 2 })
          assert.strictEqual(x.version, 2)
          assert.strictEqual(y.version, 2)
          const handler = CommandHandler.make(Order, {
            id: (cmd: { id: string }) => cmd.id,
            decide: () => [new ItemReady({ name: "b" })],
            exclusive: true,
            retry: Schedule.recurs(3)
          })
          const done = yield* handler({ id: a })
          assert.strictEqual(done.version, 3)
        }))
    })

    describe("interruption", () => {
      it.effect("a waiter interrupted just as the lock is handed to it does not keep the lock", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          for (let round = 0; round < 40; round++) yield* Effect.scoped(Effect.gen(function*() {
            const holder = yield* Session.make
            const waiterStarted = yield* Effect.makeLatch(false)
            yield* Effect.provideService(Session.fetchForExclusiveWriting(Order, id), Session.Session, holder)
            const waiter = yield* Effect.fork(Session.run(Effect.zipRight(
              waiterStarted.open,
              Session.fetchForExclusiveWriting(Order, id, { timeout: "5 seconds" })
            )))
            yield* waiterStarted.await
            yield* Effect.sleep(5)
            // The save hands the lock to the waiter; the interruption races with that hand-over.
            yield* Effect.all([
              Effect.provideService(Session.saveChanges, Session.Session, holder),
              Effect.zipRight(round % 2 === 0 ? Effect.void : Effect.yieldNow(), Fiber.interrupt(waiter))
            ], { concurrency: "unbounded" })
          }))
          const stream = yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" }))
          assert.strictEqual(stream.version, 1)
        }))

      it.effect("exclusive fetches interrupted at random points leave no stream locked and no save hanging", () =>
        Effect.gen(function*() {
          const ids = [newId("order"), newId("order"), newId("order")]
          for (const id of ids) yield* seed(id)
          let seed_ = 12345
          const random = () => (seed_ = (seed_ * 1103515245 + 12345) % 2147483648) / 2147483648
          const attempt = (id: string) =>
            Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForExclusiveWriting(Order, id, { timeout: "2 seconds" })
              yield* stream.appendOne(new ItemReady({ name: "a" }))
              return yield* Session.saveChanges
            }))
          for (let round = 0; round < 60; round++) {
            const fibers = yield* Effect.forEach(ids, (id) => Effect.fork(attempt(id)))
            // Interrupt each after 0-3 ms: before, during or just after the lock is taken.
            yield* Effect.forEach(fibers, (fiber) =>
              Effect.zipRight(Effect.sleep(Math.floor(random() * 4)), Fiber.interrupt(fiber)), { concurrency: "unbounded", discard: true })
          }
          // Every stream is lockable at once, and a save on each goes through promptly.
          const after = yield* Effect.forEach(ids, (id) =>
            Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" })
              yield* stream.appendOne(new ItemReady({ name: "b" }))
              return yield* Session.saveChanges
            })).pipe(Effect.timeout("5 seconds")), { concurrency: "unbounded" })
          assert.strictEqual(after.length, 3)
          // Each stream's versions are whole: saves that were interrupted wrote all or nothing.
          for (const id of ids) {
            const events = yield* Session.run(Session.readStream(id))
            events.forEach((event, i) => assert.strictEqual(event.version, i + 1))
          }
        }))
    })
  })
