/**
 * The combiner's policy of slots (src/pg/combiner.ts), with a policy whose
 * statements land when the test says: requests go alone while slots are free
 * and nothing queues; beyond, they queue and go together, at most
 * `maxQueuedInFlight` such statements at once; while one runs, newcomers
 * queue behind it even with slots free; every slot comes back.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Combiner from "../src/pg/combiner.js"
import type { Store } from "../src/pg/store.js"
import * as WriteCombining from "../src/pg/writeCombining.js"

interface Request extends Combiner.Waiter<string, never> {
  readonly name: string
}
interface Sent {
  readonly names: ReadonlyArray<string>
  readonly land: () => void
  /** Gives the statement's slot back alone, as a second end would. */
  readonly slot: () => void
}

const make = (maxQueuedInFlight = 1, takeOne = false) => {
  const sent: Array<Sent> = []
  const combiner = Combiner.make<string, never, Request>({
    maxInFlight: 3,
    maxQueuedInFlight,
    take: (queue) => queue.splice(0, takeOne ? 1 : queue.length),
    send: (taken, landed) =>
      void sent.push({
        names: taken.map((w) => w.name),
        slot: landed,
        land: () => {
          landed()
          for (const waiter of taken) waiter.resume(Effect.succeed(`${waiter.name} combined`))
        }
      })
  })
  // As reads and saves ask: alone while free, else queued.
  const request = (name: string, alone: Effect.Effect<string>) =>
    Effect.suspend(() =>
      Combiner.free(combiner)
        ? Combiner.alone(combiner, alone)
        : Combiner.enqueue(combiner, { name, resume: Combiner.unqueued, gone: false, cancel: undefined })
    )
  return { combiner, request, sent }
}

// Past the turn of the event loop after which queued requests are flushed.
const nextTurns = Effect.promise(() => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve))))

describe("combiner", () => {
  it.live("alone while free; beyond, one queued statement at a time, and newcomers queue behind it until it lands", () =>
    Effect.gen(function*() {
      const { combiner, request, sent } = make()
      const gates = yield* Effect.all(Array.from({ length: 3 }, () => Deferred.make<string>()))
      const alone = yield* Effect.all(gates.map((gate, i) => Effect.fork(request(`a${i}`, Deferred.await(gate)))))
      yield* nextTurns
      assert.strictEqual(combiner.inFlight, 3)
      assert.isFalse(Combiner.free(combiner))

      const queued = yield* Effect.all(["q0", "q1", "q2", "q3"].map((name) => Effect.fork(request(name, Effect.succeed(`${name} alone`)))))
      yield* nextTurns
      assert.deepStrictEqual(sent.map((s) => s.names), [], "no slot is free: nothing is sent")
      assert.strictEqual(combiner.queue.length, 4)

      // One alone lands: its slot takes the whole queue, as one statement.
      yield* Deferred.succeed(gates[0], "a0 alone")
      yield* nextTurns
      assert.deepStrictEqual(sent.map((s) => s.names), [["q0", "q1", "q2", "q3"]])
      yield* Deferred.succeed(gates[1], "a1 alone")
      yield* Deferred.succeed(gates[2], "a2 alone")
      assert.deepStrictEqual(yield* Effect.all(alone.map(Fiber.join)), ["a0 alone", "a1 alone", "a2 alone"])
      assert.strictEqual(combiner.inFlight, 1)

      // Two slots are free, but a queued statement runs: newcomers queue, and no second one goes.
      assert.isFalse(Combiner.free(combiner))
      const later = yield* Effect.all(["l0", "l1"].map((name) => Effect.fork(request(name, Effect.succeed(`${name} alone`)))))
      yield* nextTurns
      assert.strictEqual(sent.length, 1)
      assert.strictEqual(combiner.queue.length, 2)

      sent[0].land()
      assert.deepStrictEqual(yield* Effect.all(queued.map(Fiber.join)), ["q0 combined", "q1 combined", "q2 combined", "q3 combined"])
      yield* nextTurns
      assert.deepStrictEqual(sent.map((s) => s.names), [["q0", "q1", "q2", "q3"], ["l0", "l1"]])
      sent[1].land()
      assert.deepStrictEqual(yield* Effect.all(later.map(Fiber.join)), ["l0 combined", "l1 combined"])

      // Drained: every slot back, and a request goes alone again.
      assert.deepStrictEqual([combiner.inFlight, combiner.queuedInFlight, combiner.queue.length], [0, 0, 0])
      assert.isTrue(Combiner.free(combiner))
      assert.strictEqual(yield* request("x", Effect.succeed("x alone")), "x alone")
    }))

  it.live("a queued request interrupted before its statement leaves the queue; a statement's slot comes back once however often it lands", () =>
    Effect.gen(function*() {
      const { combiner, request, sent } = make()
      const gates = yield* Effect.all(Array.from({ length: 3 }, () => Deferred.make<string>()))
      const alone = yield* Effect.all(gates.map((gate, i) => Effect.fork(request(`a${i}`, Deferred.await(gate)))))
      const kept = yield* Effect.fork(request("kept", Effect.succeed("kept alone")))
      const dropped = yield* Effect.fork(request("dropped", Effect.succeed("dropped alone")))
      yield* nextTurns
      yield* Fiber.interrupt(dropped)
      assert.strictEqual(combiner.queue.length, 1)
      for (const gate of gates) yield* Deferred.succeed(gate, "done")
      yield* Effect.all(alone.map(Fiber.join))
      yield* nextTurns
      assert.deepStrictEqual(sent.map((s) => s.names), [["kept"]])
      sent[0].land()
      sent[0].slot()
      assert.strictEqual(yield* Fiber.join(kept), "kept combined")
      assert.deepStrictEqual([combiner.inFlight, combiner.queuedInFlight, combiner.queue.length], [0, 0, 0])
    }))

  it.live("with as many queued statements allowed as slots (saves with combining off), queued requests take every free slot", () =>
    Effect.gen(function*() {
      // A policy that takes one request a statement, as saves without combining.
      const { combiner, request, sent } = make(3, true)
      const gates = yield* Effect.all(Array.from({ length: 3 }, () => Deferred.make<string>()))
      const alone = yield* Effect.all(gates.map((gate, i) => Effect.fork(request(`a${i}`, Deferred.await(gate)))))
      yield* nextTurns
      const queued = yield* Effect.all(["q0", "q1", "q2"].map((name) => Effect.fork(request(name, Effect.succeed(`${name} alone`)))))
      yield* nextTurns
      assert.strictEqual(combiner.queue.length, 3)
      for (const gate of gates) yield* Deferred.succeed(gate, "done")
      yield* Effect.all(alone.map(Fiber.join))
      yield* nextTurns
      assert.deepStrictEqual(sent.map((s) => s.names), [["q0"], ["q1"], ["q2"]], "three queued statements at once")
      assert.strictEqual(combiner.queuedInFlight, 3)
      for (const statement of sent) statement.land()
      assert.deepStrictEqual(yield* Effect.all(queued.map(Fiber.join)), ["q0 combined", "q1 combined", "q2 combined"])
      assert.deepStrictEqual([combiner.inFlight, combiner.queuedInFlight, combiner.queue.length], [0, 0, 0])
    }))

  it("saves queue behind at most two combined statements, and with combining off may fill every slot", () => {
    const store = {} as Store
    assert.strictEqual(WriteCombining.make(store, true).combiner.maxQueuedInFlight, Combiner.maxQueuedInFlight)
    assert.strictEqual(Combiner.maxQueuedInFlight, 2)
    assert.strictEqual(WriteCombining.make(store, false).combiner.maxQueuedInFlight, WriteCombining.maxSavesInFlight)
  })
})
