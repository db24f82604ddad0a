/**
 * The global log as a Stream (`EventStore.readAll`), on both stores: commit
 * order, resuming from a stored position, filters, tenants, live delivery,
 * bad options, and constant memory over a long log.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Aggregate, EventStore, Session } from "effect-chronicle"
import { Item, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

export class Credited extends Schema.TaggedClass<Credited>()("LogCredited", { amount: Schema.Number }) {}
class Debited extends Schema.TaggedClass<Debited>()("LogDebited", { amount: Schema.Number }) {}
export const Ledger = Aggregate.make({
  name: "LogLedger",
  events: Schema.Union(Credited, Debited),
  initial: 0,
  evolve: (total, event) => event._tag === "LogCredited" ? total + event.amount : total - event.amount
})

const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))
const credit = (id: string, ...amounts: Array<number>) => save(Session.append(Ledger, id, amounts.map((amount) => new Credited({ amount }))))
const all = (options?: EventStore.ReadAllOptions) => Effect.map(Stream.runCollect(EventStore.readAll(options)), Chunk.toArray)
const summary = (events: ReadonlyArray<EventStore.LoggedEnvelope>) => events.map((e) => [e.streamId, e.version, e.type, e.data])

/** Each test writes in a tenant of its own, so that readAll of that tenant sees only its events. */
const inFreshTenant = <A, E, R>(f: (tenant: string) => Effect.Effect<A, E, R>) => {
  const tenant = newId("log")
  return EventStore.withTenant(f(tenant), tenant)
}

export const readAll = (store: StoreUnderTest) =>
  layer(store.layer([]), { excludeTestServices: true })(`readAll: ${store.name}`, (it) => {
    it.effect("gives the tenant's events in commit order, with positions that order them", () =>
      inFreshTenant((tenant) =>
        Effect.gen(function*() {
          const a = newId("a")
          const b = newId("b")
          yield* credit(a, 1, 2)
          yield* credit(b, 10)
          yield* save(Effect.zipRight(Session.append(Ledger, a, [new Debited({ amount: 3 })]), Session.append(Ledger, b, [new Credited({ amount: 20 })])))
          const events = yield* all()
          assert.deepStrictEqual(summary(events), [
            [a, 1, "LogCredited", { amount: 1 }],
            [a, 2, "LogCredited", { amount: 2 }],
            [b, 1, "LogCredited", { amount: 10 }],
            [a, 3, "LogDebited", { amount: 3 }],
            [b, 2, "LogCredited", { amount: 20 }]
          ])
          for (const e of events) assert.strictEqual(e.tenantId, tenant)
          const sequences = events.map((e) => e.sequence)
          assert.deepStrictEqual(sequences, [...sequences].sort((x, y) => x - y))
          assert.strictEqual(new Set(events.map((e) => e.position)).size, events.length)
          for (const e of events) assert.strictEqual(typeof e.position, "string")
        })))

    it.effect("resumes after a stored position (JSON round trip) with no duplicate and no gap, at any batch size", () =>
      inFreshTenant(() =>
        Effect.gen(function*() {
          const id = newId("a")
          yield* credit(id, 1, 2, 3, 4, 5, 6, 7)
          const full = yield* all()
          for (const batchSize of [1, 2, 3, 500]) {
            assert.deepStrictEqual(summary(yield* all({ batchSize })), summary(full))
            for (let k = 0; k < full.length; k++) {
              const stored = JSON.parse(JSON.stringify({ position: full[k].position })) as { position: EventStore.Position }
              const rest = yield* all({ after: stored.position, batchSize })
              assert.deepStrictEqual(summary(rest), summary(full.slice(k + 1)))
            }
          }
          // After the last event: nothing yet, then exactly what comes next.
          const last = full[full.length - 1].position
          assert.deepStrictEqual(yield* all({ after: last }), [])
          yield* credit(id, 8)
          assert.deepStrictEqual(summary(yield* all({ after: last })), [[id, 8, "LogCredited", { amount: 8 }]])
        })))

    it.effect("ends at the head it had when called: events committed while it reads are left for the next read", () =>
      inFreshTenant(() =>
        Effect.gen(function*() {
          const id = newId("a")
          yield* credit(id, 1, 2, 3)
          const read = yield* EventStore.readAll({ batchSize: 1 }).pipe(
            Stream.tap((e) => credit(id, 100 + e.version)),
            Stream.take(20),
            Stream.runCollect
          )
          assert.deepStrictEqual(Chunk.toArray(read).map((e) => e.data), [{ amount: 1 }, { amount: 2 }, { amount: 3 }])
          assert.strictEqual((yield* all()).length, 6)
        })))

    it.effect("filters by event types and by stream types", () =>
      inFreshTenant(() =>
        Effect.gen(function*() {
          const ledger = newId("ledger")
          const order = newId("order")
          yield* credit(ledger, 1)
          yield* save(Session.append(Order, order, [new OrderCreated({ items: [new Item({ name: "x", ready: false })] }), new OrderReady()]))
          yield* save(Session.append(Ledger, ledger, [new Debited({ amount: 1 })]))
          const types = (events: ReadonlyArray<EventStore.LoggedEnvelope>) => events.map((e) => e.type)
          assert.deepStrictEqual(types(yield* all({ types: ["LogDebited", "OrderReady"] })), ["OrderReady", "LogDebited"])
          assert.deepStrictEqual(types(yield* all({ streamTypes: ["Order"] })), ["OrderCreated", "OrderReady"])
          assert.deepStrictEqual(types(yield* all({ streamTypes: ["LogLedger"], types: ["LogCredited"] })), ["LogCredited"])
          assert.deepStrictEqual(yield* all({ types: [] }), [])
          // Pages smaller than the run of events a filter leaves out still reach the events after it.
          assert.deepStrictEqual(types(yield* all({ types: ["LogDebited"], batchSize: 1 })), ["LogDebited"])
          assert.deepStrictEqual(types(yield* all({ streamTypes: ["LogLedger"], batchSize: 2 })), ["LogCredited", "LogDebited"])
          // A filtered read resumes from a filtered event's position.
          const [created] = yield* all({ streamTypes: ["Order"] })
          assert.deepStrictEqual(types(yield* all({ after: created.position })), ["OrderReady", "LogDebited"])
        })))

    it.effect("is scoped to the current tenant; allTenants reads every tenant's", () =>
      Effect.gen(function*() {
        const t1 = newId("t1")
        const t2 = newId("t2")
        const id = newId("shared")
        yield* EventStore.withTenant(credit(id, 1), t1)
        yield* EventStore.withTenant(credit(id, 2), t2)
        const of = (tenant: string) => Effect.map(EventStore.withTenant(all(), tenant), (es) => es.map((e) => [e.tenantId, e.data]))
        assert.deepStrictEqual(yield* of(t1), [[t1, { amount: 1 }]])
        assert.deepStrictEqual(yield* of(t2), [[t2, { amount: 2 }]])
        const everyone = yield* EventStore.withTenant(all({ allTenants: true }), t1)
        const ours = everyone.filter((e) => e.streamId === id).map((e) => [e.tenantId, e.data])
        assert.deepStrictEqual(ours, [[t1, { amount: 1 }], [t2, { amount: 2 }]])
      }))

    it.effect("live: delivers events committed after the stream started, and keeps waiting", () =>
      inFreshTenant(() =>
        Effect.gen(function*() {
          const id = newId("a")
          yield* credit(id, 1)
          const fiber = yield* EventStore.readAll({ live: true, pollInterval: "5 seconds" }).pipe(
            Stream.take(3),
            Stream.runCollect,
            Effect.fork
          )
          yield* Effect.sleep("100 millis")
          yield* credit(id, 2)
          yield* Effect.sleep("100 millis")
          yield* credit(id, 3)
          const got = yield* Fiber.join(fiber).pipe(Effect.timeout("3 seconds"))
          // Woken by the commits, well before the 5-second poll.
          assert.deepStrictEqual(Chunk.toArray(got).map((e) => e.data), [{ amount: 1 }, { amount: 2 }, { amount: 3 }])
        })))

    it.effect("a bad option fails the stream with InvalidOptionError naming it", () =>
      Effect.gen(function*() {
        const cases: Array<[EventStore.ReadAllOptions, string]> = [
          [{ after: "not a position" as EventStore.Position }, "after"],
          [{ after: 42 as unknown as EventStore.Position }, "after"],
          [{ after: "-1/3" as EventStore.Position }, "after"],
          [{ batchSize: 0 }, "batchSize"],
          [{ batchSize: 1.5 }, "batchSize"],
          [{ batchSize: 1_000_000 }, "batchSize"],
          [{ types: "LogCredited" as unknown as ReadonlyArray<string> }, "types"],
          [{ streamTypes: [1] as unknown as ReadonlyArray<string> }, "streamTypes"]
        ]
        for (const [options, option] of cases) {
          const error = yield* Effect.flip(all(options))
          assert.deepInclude(error, { _tag: "InvalidOptionError", option })
        }
      }))

    describe("constant memory", () => {
      it.effect("streams 100,000 events without holding them", () =>
        inFreshTenant(() =>
          Effect.gen(function*() {
            const streams = 100
            const perStream = 1_000
            yield* Effect.forEach(
              Array.from({ length: streams }, (_, i) => i),
              (i) => credit(`bulk-${i}`, ...Array.from({ length: perStream }, (_, n) => n)),
              { concurrency: 4, discard: true }
            )
            v8.setFlagsFromString("--expose-gc")
            const gc = vm.runInNewContext("gc") as () => void
            let first: WeakRef<object> | undefined
            let count = 0
            let heapAtStart = 0
            let heapGrowth = 0
            yield* Stream.runForEach(EventStore.readAll({ batchSize: 1_000 }), (envelope) =>
              Effect.sync(() => {
                count++
                if (count === 1) first = new WeakRef(envelope)
                if (count === 10_000) {
                  gc()
                  heapAtStart = process.memoryUsage().heapUsed
                }
                if (count === 90_000) {
                  gc()
                  heapGrowth = process.memoryUsage().heapUsed - heapAtStart
                }
              }))
            assert.strictEqual(count, streams * perStream)
            // A WeakRef's target lives until the end of the job that made it: collect after a macrotask.
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 0)))
            gc()
            // Nothing holds the first envelope once it was consumed, and 80,000 more did not grow the heap
            // by what holding them would take (about 30 MB).
            assert.isUndefined(first!.deref())
            assert.isBelow(heapGrowth, 10 * 1024 * 1024)
          })), { timeout: 120_000 })
    })
  })
