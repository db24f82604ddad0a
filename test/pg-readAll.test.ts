/**
 * readAll and subscriptions on PostgreSQL against transactions that commit
 * out of order: a caller's transaction holding a lower sequence open holds
 * later commits back until it ends, and a rollback leaves a gap that does not
 * stall the stream.
 */
import { assert, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { EventStore, Session } from "effect-chronicle"
import { Credited, Ledger } from "./readAll.js"
import { newId, pgStore } from "./support.js"

const credit = (id: string, amount: number) =>
  Session.run(Effect.zipRight(Session.append(Ledger, id, [new Credited({ amount })]), Session.saveChanges))

/** A transaction of the caller that appends to `id`, then waits for `gate` and commits (or fails, rolling back). */
const holdOpen = (id: string, gate: Deferred.Deferred<void>, outcome: "commit" | "rollback") =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const wrote = yield* Deferred.make<void>()
    const fiber = yield* Effect.fork(Effect.exit(sql.withTransaction(Effect.gen(function*() {
      yield* credit(id, 1)
      yield* Deferred.succeed(wrote, undefined)
      yield* Deferred.await(gate)
      if (outcome === "rollback") return yield* Effect.fail("rolled back by the test")
    }))))
    yield* Deferred.await(wrote)
    return fiber
  })

layer(pgStore().layer([]), { excludeTestServices: true })("readAll on PostgreSQL: out-of-order commits", (it) => {
  for (const outcome of ["commit", "rollback"] as const) {
    it.effect(`a caller's open transaction holds later commits back until it ends (${outcome})`, () => {
      const tenant = newId("hold")
      return EventStore.withTenant(
        Effect.gen(function*() {
          const early = newId("early")
          const late = newId("late")
          const gate = yield* Deferred.make<void>()
          const holder = yield* holdOpen(early, gate, outcome)
          // Two saves commit after the open transaction took its (lower) sequence.
          yield* credit(late, 2)
          yield* credit(late, 3)
          const live = yield* EventStore.readAll({ live: true, pollInterval: "50 millis" }).pipe(
            Stream.map((e) => [e.streamId, e.data] as const),
            Stream.take(outcome === "commit" ? 3 : 2),
            Stream.runCollect,
            Effect.fork
          )
          // A read to the head waits for the open transaction too, rather than end without it.
          const toHead = yield* Effect.fork(Stream.runCollect(EventStore.readAll()))
          yield* Effect.sleep("500 millis")
          assert.isTrue(Option.isNone(yield* Fiber.poll(live)), "nothing is emitted while the earlier transaction is open")
          assert.isTrue(Option.isNone(yield* Fiber.poll(toHead)))
          yield* Deferred.succeed(gate, undefined)
          yield* Fiber.join(holder)
          const expected: Array<readonly [string, unknown]> = outcome === "commit"
            ? [[early, { amount: 1 }], [late, { amount: 2 }], [late, { amount: 3 }]]
            : [[late, { amount: 2 }], [late, { amount: 3 }]]
          assert.deepStrictEqual(Chunk.toArray(yield* Fiber.join(live).pipe(Effect.timeout("20 seconds"))), expected)
          const all = Chunk.toArray(yield* Fiber.join(toHead).pipe(Effect.timeout("20 seconds")))
          assert.deepStrictEqual(all.map((e) => [e.streamId, e.data] as const), expected)
        }),
        tenant
      )
    }, { timeout: 60_000 })
  }
})
