/**
 * The conformance suite: every behaviour of the contract, run unchanged against
 * the in-memory store and PostgreSQL. Ports Marten's FetchForWriting specs.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { Aggregate, CommandHandler, EventStore, type EventMetadata, Projection, ProjectionDaemon, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated, OrderReady, OrderShipped } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) =>
  new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })

/** Writes events to a stream in a session of their own, with no expectation. */
const seed = (id: string, events: ReadonlyArray<typeof Order.events.Type>) =>
  Session.run(Effect.zipRight(Session.append(Order, id, events), Session.saveChanges))

const versionOf = (id: string) =>
  Session.run(Effect.map(Session.readStream(id), (events) => events.length === 0 ? 0 : events[events.length - 1].version))

// A counter with one event type, for the torture tests.
export class Incremented extends Schema.TaggedClass<Incremented>()("Incremented", {
  by: Schema.Number,
  command: Schema.String,
  /** The total the command saw plus `by`: proves each decision was made on the current state. */
  total: Schema.optional(Schema.Number)
}) {}
export const Counter = Aggregate.make({
  name: "Counter",
  events: Incremented,
  state: Schema.Struct({ total: Schema.Number, commands: Schema.Array(Schema.String) }),
  initial: { total: 0, commands: [] as ReadonlyArray<string> },
  evolve: (state, event) => ({ total: state.total + event.by, commands: [...state.commands, event.command] })
})

// An aggregate whose events the Order schema does not know, to store alien types.
class Alien extends Schema.TaggedClass<Alien>()("Alien", { x: Schema.Number }) {}
const AlienAggregate = Aggregate.make({ name: "Alien", events: Alien, initial: 0, evolve: (s) => s + 1 })
// Same tag as an Order event, different payload: the Order schema rejects it on read.
class BadItemReady extends Schema.TaggedClass<BadItemReady>()("ItemReady", { name: Schema.Number }) {}
const BadAggregate = Aggregate.make({ name: "Order", events: BadItemReady, initial: 0, evolve: (s) => s + 1 })

// Events whose encoded side is not JSON.
class WithDate extends Schema.TaggedClass<WithDate>()("WithDate", { at: Schema.DateFromSelf }) {}
class WithNumber extends Schema.TaggedClass<WithNumber>()("WithNumber", { n: Schema.Number }) {}
const Odd = Aggregate.make({ name: "Odd", events: Schema.Union(WithDate, WithNumber), initial: 0, evolve: (n) => n + 1 })

// Text that breaks naive JSON or SQL building: quotes, backslashes, control characters, non-ASCII.
const hostile = `quote " backslash \\ newline \n tab \t nul-free ✓ 𝄞 '; DROP TABLE events; --`
class Noted extends Schema.TaggedClass<Noted>()(`Noted "${hostile}"`, { text: Schema.String, n: Schema.Number }) {}
const Notes = Aggregate.make({
  name: "Notes",
  events: Noted,
  initial: [] as ReadonlyArray<string>,
  evolve: (state, event) => [...state, event.text]
})

// Events that carry anything, and event types PostgreSQL cannot store, for the table of bad inputs.
class Anything extends Schema.TaggedClass<Anything>()("Anything", { value: Schema.Unknown }) {}
class NulTyped extends Schema.TaggedClass<NulTyped>()("Nul\u0000Typed", {}) {}
class SurrogateTyped extends Schema.TaggedClass<SurrogateTyped>()("Surrogate\uD800Typed", {}) {}
const Loose = Aggregate.make({
  name: "Loose",
  events: Schema.Union(Anything, NulTyped, SurrogateTyped),
  initial: 0,
  evolve: (n) => n + 1
})
const nested = (depth: number): unknown => {
  let value: unknown = "bottom"
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { a: value }
  return value
}

const storeFor = (store: StoreUnderTest, lifecycle: Projection.Lifecycle) => {
  const base = store.layer(lifecycle === "Live" ? [] : [Projection.snapshot(Order, lifecycle), Projection.snapshot(Counter, lifecycle)])
  // Async runs with a daemon writing snapshots meanwhile, so fetches meet snapshots at any point of a stream.
  return lifecycle === "Async"
    ? ProjectionDaemon.layer({ pollInterval: "50 millis", batchSize: 7 }).pipe(Layer.provideMerge(base))
    : base
}

export const conformance = (store: StoreUnderTest, lifecycle: Projection.Lifecycle = "Live") =>
  layer(storeFor(store, lifecycle), { excludeTestServices: true })(`conformance: ${store.name}, ${lifecycle}${store.variant === undefined ? "" : `, ${store.variant}`}`, (it) => {
    describe("fetchForWriting", () => {
      it.effect("a new stream has no aggregate and version 0; appending 6 events makes version 6", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const result = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            assert.isTrue(Option.isNone(stream.aggregate))
            assert.strictEqual(stream.version, 0)
            yield* stream.appendOne(created("a", "b", "c"))
            yield* stream.appendMany([new ItemReady({ name: "a" }), new ItemReady({ name: "b" })])
            yield* stream.appendMany([new ItemReady({ name: "c" }), new OrderReady(), new OrderShipped()])
            return yield* Session.saveChanges
          }))
          assert.strictEqual(result.streams[0].version, 6)
          assert.strictEqual(result.streams[0].previousVersion, 0)
          assert.strictEqual(yield* versionOf(id), 6)
          const state = yield* Session.run(Session.fetchLatest(Order, id))
          assert.deepStrictEqual(Option.map(state, (s) => [s.ready, s.shipped, s.items.every((i) => i.ready)]), Option.some([true, true, true]))
        }))

      it.effect("an existing stream comes with its state and version", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b"), new ItemReady({ name: "a" })])
          const stream = yield* Session.run(Session.fetchForWriting(Order, id))
          assert.strictEqual(stream.version, 2)
          const order = Option.getOrThrow(stream.aggregate)
          assert.deepStrictEqual(order.items.map((i) => [i.name, i.ready]), [["a", true], ["b", false]])
        }))

      it.effect("the right expected version fetches; a wrong one fails at fetch with the actual version", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a"), new ItemReady({ name: "a" })])
          const ok = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id, { expectedVersion: 2 })
            yield* stream.appendOne(new OrderReady())
            return yield* Session.saveChanges
          }))
          assert.strictEqual(ok.streams[0].version, 3)
          const error = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id, { expectedVersion: 2 })))
          assert.strictEqual(error._tag, "ConcurrencyError")
          assert.deepInclude(error, { streamId: id, expectedVersion: 2, actualVersion: 3 })
          const onNew = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, newId("none"), { expectedVersion: 1 })))
          assert.deepInclude(onNew, { _tag: "ConcurrencyError", expectedVersion: 1, actualVersion: 0 })
        }))

      it.effect("a write between fetch and save makes the save fail, and nothing of it is written", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* seed(id, [new ItemReady({ name: "b" })])
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "ConcurrencyError", streamId: id, expectedVersion: 1, actualVersion: 2 })
          const events = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => [e.version, e.type, (e.data as any).name]), [
            [1, "OrderCreated", undefined],
            [2, "ItemReady", "b"]
          ])
        }))

      it.effect("two sessions racing on one stream: exactly one wins", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const attempt = (name: string) =>
            Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForWriting(Order, id)
              yield* Effect.sleep("20 millis") // both fetch before either saves
              yield* stream.appendOne(new ItemReady({ name }))
              return yield* Session.saveChanges
            }))
          const [a, b] = yield* Effect.all([Effect.exit(attempt("a")), Effect.exit(attempt("b"))], { concurrency: 2 })
          const wins = [a, b].filter(Exit.isSuccess)
          const losses = [a, b].filter(Exit.isFailure)
          assert.strictEqual(wins.length, 1)
          assert.strictEqual(losses.length, 1)
          const lost = Exit.isFailure(losses[0]) ? losses[0].cause : undefined
          assert.include(String(lost), "ConcurrencyError")
          assert.strictEqual(yield* versionOf(id), 2)
        }))

      it.effect("two writers that both fetched a new id: the second gets ConcurrencyError with expectedVersion 0", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* Session.run(Effect.gen(function*() {
              const other = yield* Session.fetchForWriting(Order, id)
              yield* other.appendOne(created("x"))
              yield* Session.saveChanges
            }))
            yield* stream.appendOne(created("y"))
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "ConcurrencyError", streamId: id, expectedVersion: 0, actualVersion: 1 })
        }))

      it.effect("fetching a stream twice: the last fetch sets the expected version", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const saved = yield* Session.run(Effect.gen(function*() {
            const first = yield* Session.fetchForWriting(Order, id)
            yield* seed(id, [new ItemReady({ name: "b" })])
            const second = yield* Session.fetchForWriting(Order, id)
            assert.strictEqual(first.version, 1)
            assert.strictEqual(second.version, 2)
            yield* second.appendOne(new ItemReady({ name: "a" }))
            return yield* Session.saveChanges
          }))
          assert.strictEqual(saved.streams[0].version, 3)
        }))
    })

    describe("startStream and append", () => {
      it.effect("startStream on a taken id fails with StreamExistsError and writes nothing", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* Session.run(Effect.zipRight(Session.startStream(Order, id, [created("a")]), Session.saveChanges))
          const error = yield* Effect.flip(
            Session.run(Effect.zipRight(Session.startStream(Order, id, [created("b")]), Session.saveChanges))
          )
          assert.deepInclude(error, { _tag: "StreamExistsError", streamId: id })
          assert.strictEqual(yield* versionOf(id), 1)
        }))

      it.effect("append with an expected version checks it at save", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const error = yield* Effect.flip(Session.run(Effect.zipRight(
            Session.append(Order, id, [new ItemReady({ name: "a" })], { expectedVersion: 0 }),
            Session.saveChanges
          )))
          assert.deepInclude(error, { _tag: "ConcurrencyError", expectedVersion: 0, actualVersion: 1 })
          const ok = yield* Session.run(Effect.zipRight(
            Session.append(Order, id, [new ItemReady({ name: "a" })], { expectedVersion: 1 }),
            Session.saveChanges
          ))
          assert.strictEqual(ok.streams[0].version, 2)
        }))

      it.effect("append joins the pending action of a stream fetched in the same session", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const saved = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            yield* Session.append(Order, id, [new ItemReady({ name: "b" })])
            return yield* Session.saveChanges
          }))
          assert.strictEqual(saved.streams.length, 1)
          assert.strictEqual(saved.streams[0].version, 3)
          assert.deepStrictEqual(saved.streams[0].sequences.length, 2)
        }))

      it.effect("appends with no expected version to a hot stream all succeed", () =>
        Effect.gen(function*() {
          const id = newId("hot")
          const writers = 8
          const perWriter = 10
          yield* Effect.forEach(
            Array.from({ length: writers }, (_, w) => w),
            (w) =>
              Effect.forEach(
                Array.from({ length: perWriter }, (_, i) => i),
                (i) =>
                  Session.run(Effect.zipRight(
                    Session.append(Counter, id, [new Incremented({ by: 1, command: `${w}-${i}` })]),
                    Session.saveChanges
                  )),
                { discard: true }
              ),
            { concurrency: writers, discard: true }
          )
          const events = yield* Session.run(Session.readStream(id))
          assert.strictEqual(events.length, writers * perWriter)
          assert.deepStrictEqual(events.map((e) => e.version), Array.from({ length: writers * perWriter }, (_, i) => i + 1))
        }))

      it.effect("a multi-stream save is atomic: one conflict writes none of its streams and draws no sequence", () =>
        Effect.gen(function*() {
          const a = newId("a")
          const b = newId("b")
          yield* seed(a, [created("x")])
          yield* seed(b, [created("y")])
          const before = yield* Session.run(Session.readStream(b))
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const sa = yield* Session.fetchForWriting(Order, a)
            const sb = yield* Session.fetchForWriting(Order, b)
            yield* sa.appendOne(new ItemReady({ name: "x" }))
            yield* sb.appendOne(new ItemReady({ name: "y" }))
            yield* seed(b, [new OrderShipped()]) // moves b after the fetch
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "ConcurrencyError", streamId: b, expectedVersion: 1, actualVersion: 2 })
          assert.strictEqual(yield* versionOf(a), 1)
          assert.strictEqual(yield* versionOf(b), 2)
          // The next write gets the sequence right after the last stored one: the failed save left no gap.
          const shippedSeq = (yield* Session.run(Session.readStream(b)))[1].sequence
          const next = yield* seed(a, [new OrderShipped()])
          assert.strictEqual(next.streams[0].sequences[0], shippedSeq + 1)
          assert.strictEqual(before.length, 1)
        }))

      it.effect("a multi-stream save writes all its streams", () =>
        Effect.gen(function*() {
          const a = newId("a")
          const b = newId("b")
          const saved = yield* Session.run(Effect.gen(function*() {
            yield* Session.startStream(Order, a, [created("x")])
            const sb = yield* Session.fetchForWriting(Order, b)
            yield* sb.appendMany([created("y"), new ItemReady({ name: "y" })])
            return yield* Session.saveChanges
          }))
          assert.deepStrictEqual(saved.streams.map((s) => [s.streamId, s.version]), [[a, 1], [b, 2]])
          const seqs = saved.streams.flatMap((s) => s.sequences)
          assert.deepStrictEqual(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2])
        }))
    })

    describe("alwaysEnforceConsistency", () => {
      it.effect("with nothing appended, a save fails when another writer moved the stream", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.alwaysEnforceConsistency()
            yield* seed(id, [new ItemReady({ name: "a" })])
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "ConcurrencyError", expectedVersion: 1, actualVersion: 2 })
        }))

      it.effect("with nothing appended and nobody else writing, the save succeeds and writes nothing", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const saved = yield* Session.run(Effect.gen(function*() {
            yield* Session.fetchForWriting(Order, id, { alwaysEnforceConsistency: true })
            return yield* Session.saveChanges
          }))
          assert.deepStrictEqual(saved.streams.map((s) => [s.version, s.sequences.length]), [[1, 0]])
          assert.strictEqual(yield* versionOf(id), 1)
        }))

      it.effect("on a new stream, a save fails when another writer created it meanwhile", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.alwaysEnforceConsistency(true)
            yield* seed(id, [created("z")])
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "ConcurrencyError", expectedVersion: 0, actualVersion: 1 })
        }))

      it.effect("with appends, it behaves as an ordinary optimistic save", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const saved = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id, { alwaysEnforceConsistency: true })
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            return yield* Session.saveChanges
          }))
          assert.strictEqual(saved.streams[0].version, 2)
        }))

      it.effect("switching it off again leaves a session with nothing to save", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const saved = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id, { alwaysEnforceConsistency: true })
            yield* stream.alwaysEnforceConsistency(false)
            yield* seed(id, [new ItemReady({ name: "a" })])
            return yield* Session.saveChanges
          }))
          assert.deepStrictEqual(saved.streams, [])
        }))
    })

    describe("fetchForExclusiveWriting", () => {
      it.effect("a second exclusive fetch times out with StreamLockedError while the first holds the lock", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const started = Date.now()
          const [blocked, saved] = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            const blocked = yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "200 millis" })))
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            return [blocked, yield* Session.saveChanges] as const
          }))
          assert.deepInclude(blocked, { _tag: "StreamLockedError", streamId: id, timeoutMillis: 200 })
          assert.isAtLeast(Date.now() - started, 190)
          assert.strictEqual(saved.streams[0].version, 2)
          // Released by the save: the next exclusive fetch gets it at once.
          const next = yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "200 millis" }))
          assert.strictEqual(next.version, 2)
        }))

      it.effect("locks a stream that does not exist yet", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const blocked = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            assert.strictEqual(stream.version, 0)
            assert.isTrue(Option.isNone(stream.aggregate))
            const blocked = yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "100 millis" })))
            yield* stream.appendOne(created("a"))
            yield* Session.saveChanges
            return blocked
          }))
          assert.strictEqual(blocked._tag, "StreamLockedError")
          assert.strictEqual(yield* versionOf(id), 1)
        }))

      it.effect("an optimistic writer waits for the lock holder and then conflicts", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const result = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            const optimistic = yield* Effect.fork(Session.run(Effect.gen(function*() {
              const s = yield* Session.fetchForWriting(Order, id)
              yield* s.appendOne(new ItemReady({ name: "b" }))
              return yield* Session.saveChanges
            })))
            yield* Effect.sleep("100 millis")
            // Still waiting: the lock holder's save cannot be beaten.
            assert.isTrue(Option.isNone(yield* Fiber.poll(optimistic)))
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
            return yield* Fiber.join(optimistic).pipe(Effect.flip)
          }))
          assert.deepInclude(result, { _tag: "ConcurrencyError", expectedVersion: 1, actualVersion: 2 })
        }))

      it.effect("the end of the session releases the lock without writing", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            // no save
          }))
          const next = yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "200 millis" }))
          assert.strictEqual(next.version, 1)
        }))

      it.effect("interrupting a fiber that holds the lock releases it", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const holder = yield* Effect.fork(Session.run(Effect.gen(function*() {
            yield* Session.fetchForExclusiveWriting(Order, id)
            yield* Effect.never
          })))
          yield* Effect.sleep("100 millis")
          const blocked = yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "100 millis" })))
          assert.strictEqual(blocked._tag, "StreamLockedError")
          yield* Fiber.interrupt(holder)
          const next = yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" }))
          assert.strictEqual(next.version, 1)
        }))

      it.effect("interrupting a fiber waiting for the lock gives up its place", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            const waiter = yield* Effect.fork(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "10 seconds" })))
            yield* Effect.sleep("100 millis")
            yield* Fiber.interrupt(waiter)
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
          }))
          const next = yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" }))
          assert.strictEqual(next.version, 2)
        }))

      it.effect("after its first exclusive fetch times out, a session can still lock another stream and save", () =>
        Effect.gen(function*() {
          const held = newId("order")
          const free = newId("order")
          yield* seed(held, [created("a")])
          yield* seed(free, [created("b")])
          const [blocked, saved] = yield* Session.run(Effect.gen(function*() {
            yield* Session.fetchForExclusiveWriting(Order, held)
            return yield* Session.run(Effect.gen(function*() {
              const blocked = yield* Effect.flip(Session.fetchForExclusiveWriting(Order, held, { timeout: "100 millis" }))
              const stream = yield* Session.fetchForExclusiveWriting(Order, free, { timeout: "1 second" })
              yield* stream.appendOne(new ItemReady({ name: "b" }))
              return [blocked, yield* Session.saveChanges] as const
            }))
          }))
          assert.strictEqual(blocked._tag, "StreamLockedError")
          assert.deepStrictEqual(saved.streams.map((s) => [s.streamId, s.version]), [[free, 2]])
          assert.strictEqual(yield* versionOf(free), 2)
          assert.strictEqual(yield* versionOf(held), 1)
        }))

      it.effect("a lock not had keeps the locks the session already holds", () =>
        Effect.gen(function*() {
          const mine = newId("order")
          const theirs = newId("order")
          yield* seed(mine, [created("a")])
          yield* seed(theirs, [created("b")])
          const result = yield* Session.run(Effect.gen(function*() {
            yield* Session.fetchForExclusiveWriting(Order, theirs)
            return yield* Session.run(Effect.gen(function*() {
              const stream = yield* Session.fetchForExclusiveWriting(Order, mine)
              const blocked = yield* Effect.flip(Session.fetchForExclusiveWriting(Order, theirs, { timeout: "100 millis" }))
              // Still ours: another session cannot take it.
              const other = yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, mine, { timeout: "100 millis" })))
              yield* stream.appendOne(new ItemReady({ name: "a" }))
              const saved = yield* Session.saveChanges
              return { blocked, other, saved }
            }))
          }))
          assert.strictEqual(result.blocked._tag, "StreamLockedError")
          assert.strictEqual(result.other._tag, "StreamLockedError")
          assert.strictEqual(result.saved.streams[0].version, 2)
          assert.strictEqual(yield* versionOf(mine), 2)
        }))

      it.effect("the default lock time-out applies when none is given", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          const error = yield* Session.run(Effect.gen(function*() {
            yield* Session.fetchForExclusiveWriting(Order, id)
            return yield* Session.run(Session.fetchForExclusiveWriting(Order, id)).pipe(
              Effect.flip,
              Effect.timeout("10 seconds")
            )
          }))
          assert.deepInclude(error, { _tag: "StreamLockedError", timeoutMillis: 5000 })
        }), { timeout: 20_000 })
    })

    describe("fetchLatest, aggregateStream, readStream", () => {
      it.effect("fetchLatest after a save in the same session returns the new state without reading", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const [latest, stored] = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
            // Another writer moves the stream: a read would see it, the identity map does not.
            yield* seed(id, [new ItemReady({ name: "b" })])
            return [yield* Session.fetchLatest(Order, id), yield* Session.run(Session.fetchLatest(Order, id))] as const
          }))
          assert.deepStrictEqual(Option.map(latest, (o) => o.items.map((i) => i.ready)), Option.some([true, false]))
          assert.deepStrictEqual(Option.map(stored, (o) => o.items.map((i) => i.ready)), Option.some([true, true]))
        }))

      it.effect("fetchLatest in a new session reads the saved state; None for no stream", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a"), new ItemReady({ name: "a" }), new OrderReady()])
          const latest = yield* Session.run(Session.fetchLatest(Order, id))
          assert.deepStrictEqual(Option.map(latest, (o) => o.ready), Option.some(true))
          assert.isTrue(Option.isNone(yield* Session.run(Session.fetchLatest(Order, newId("none")))))
        }))

      it.effect("time travel by version and by timestamp", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          yield* Effect.sleep("30 millis")
          yield* seed(id, [new ItemReady({ name: "a" })])
          yield* Effect.sleep("30 millis")
          yield* seed(id, [new ItemReady({ name: "b" }), new OrderReady()])
          const events = yield* Session.run(Session.readStream(id))
          const ready = (state: Option.Option<typeof Order.initial>) =>
            Option.map(state, (o) => o.items.map((i) => i.ready))
          assert.deepStrictEqual(ready(yield* Session.run(Session.aggregateStream(Order, id, { version: 1 }))), Option.some([false, false]))
          assert.deepStrictEqual(ready(yield* Session.run(Session.aggregateStream(Order, id, { version: 2 }))), Option.some([true, false]))
          assert.deepStrictEqual(ready(yield* Session.run(Session.aggregateStream(Order, id))), Option.some([true, true]))
          const atSecond = yield* Session.run(Session.aggregateStream(Order, id, { timestamp: events[1].timestamp }))
          assert.deepStrictEqual(ready(atSecond), Option.some([true, false]))
          const before = yield* Session.run(Session.aggregateStream(Order, id, { timestamp: new Date(events[0].timestamp.getTime() - 1) }))
          assert.isTrue(Option.isNone(before))
        }))

      it.effect("readStream returns raw envelopes in version order with metadata", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* EventStore.withMetadata(seed(id, [created("a"), new ItemReady({ name: "a" })]), {
            correlationId: "corr-1",
            causationId: "cause-1",
            headers: { user: "ada" }
          })
          const events = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => [e.version, e.type]), [[1, "OrderCreated"], [2, "ItemReady"]])
          assert.deepStrictEqual(events[1].data, { name: "a" })
          assert.strictEqual(events[0].correlationId, "corr-1")
          assert.strictEqual(events[0].causationId, "cause-1")
          assert.deepStrictEqual(events[0].headers, { user: "ada" })
          assert.strictEqual(events[0].tenantId, EventStore.defaultTenant)
          assert.isTrue(events[1].sequence > events[0].sequence)
          assert.instanceOf(events[0].timestamp, Date)
          const tail = yield* Session.run(Session.readStream(id, { fromVersion: 2 }))
          assert.deepStrictEqual(tail.map((e) => e.version), [2])
          // Bounds compare as numbers: versions are whole, and NaN or an invalid date matches nothing.
          const versionsOf = (options: Parameters<typeof Session.readStream>[1]) =>
            Effect.map(Session.run(Session.readStream(id, options)), (events) => events.map((e) => e.version))
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: 1.5 }), [2])
          assert.deepStrictEqual(yield* versionsOf({ toVersion: 1.5 }), [1])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: -Infinity, toVersion: Infinity }), [1, 2])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: 0 }), [1, 2])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: Infinity }), [])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: 3 }), [])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: 2, toVersion: 1 }), [])
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: Number.NaN }), [])
          assert.deepStrictEqual(yield* versionsOf({ timestamp: new Date(Number.NaN) }), [])
        }))

      it.effect("readStream with an aggregate gives decoded, typed envelopes in version order", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* EventStore.withMetadata(seed(id, [created("a", "b"), new ItemReady({ name: "a" })]), {
            correlationId: "corr-2",
            headers: { user: "grace" }
          })
          yield* seed(id, [new ItemReady({ name: "b" })])
          const events = yield* Session.run(Session.readStream(Order, id))
          assert.deepStrictEqual(events.map((e) => [e.version, e.type, e.data._tag]), [
            [1, "OrderCreated", "OrderCreated"],
            [2, "ItemReady", "ItemReady"],
            [3, "ItemReady", "ItemReady"]
          ])
          // Full events, as the aggregate's Schema decodes them: class instances, not payloads.
          assert.instanceOf(events[0].data, OrderCreated)
          assert.instanceOf((events[0].data as OrderCreated).items[0], Item)
          assert.deepStrictEqual(events[1].data, new ItemReady({ name: "a" }))
          assert.strictEqual(events[1].correlationId, "corr-2")
          assert.deepStrictEqual(events[1].headers, { user: "grace" })
          assert.deepStrictEqual(events[2].headers, {})
          const raw = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => [e.sequence, e.timestamp.getTime(), e.tenantId]), raw.map((e) => [e.sequence, e.timestamp.getTime(), e.tenantId]))
          // The raw read's bounds.
          const versionsOf = (options: Session.ReadStreamOptions) =>
            Effect.map(Session.run(Session.readStream(Order, id, options)), (events) => events.map((e) => e.version))
          assert.deepStrictEqual(yield* versionsOf({ fromVersion: 2 }), [2, 3])
          assert.deepStrictEqual(yield* versionsOf({ toVersion: 2 }), [1, 2])
          assert.deepStrictEqual(yield* versionsOf({ timestamp: new Date(events[0].timestamp.getTime() - 1) }), [])
          // Scoped to the tenant: another tenant sees no such stream.
          assert.deepStrictEqual(yield* EventStore.withTenant(Session.run(Session.readStream(Order, id)), "acme"), [])
        }))

      it.effect("event types, payloads, metadata and tenants with JSON- and SQL-hostile text read back exactly", () =>
        Effect.gen(function*() {
          const id = newId(`notes ${hostile}`)
          const events = [new Noted({ text: hostile, n: 1.5e300 }), new Noted({ text: "", n: -0.000001 })]
          yield* EventStore.withTenant(
            EventStore.withMetadata(Session.run(Effect.zipRight(Session.append(Notes, id, events), Session.saveChanges)), {
              correlationId: hostile,
              headers: { [hostile]: hostile }
            }),
            hostile
          )
          const read = yield* EventStore.withTenant(Session.run(Session.readStream(id)), hostile)
          assert.deepStrictEqual(read.map((e) => [e.version, e.type, e.data, e.tenantId, e.correlationId, e.headers]), [
            [1, Noted._tag, { text: hostile, n: 1.5e300 }, hostile, hostile, { [hostile]: hostile }],
            [2, Noted._tag, { text: "", n: -0.000001 }, hostile, hostile, { [hostile]: hostile }]
          ])
          const bounded = yield* EventStore.withTenant(Session.run(Session.readStream(id, { fromVersion: 2, toVersion: 2 })), hostile)
          assert.deepStrictEqual(bounded.map((e) => [e.version, e.data]), [[2, { text: "", n: -0.000001 }]])
          const state = yield* EventStore.withTenant(Session.run(Session.aggregateStream(Notes, id)), hostile)
          assert.deepStrictEqual(state, Option.some([hostile, ""]))
        }))

      it.effect("events are written with the tenant in effect", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* EventStore.withTenant(seed(id, [created("a")]), "acme")
          const events = yield* EventStore.withTenant(Session.run(Session.readStream(id)), "acme")
          assert.strictEqual(events[0].tenantId, "acme")
          // The stream is acme's: the default tenant has no stream of that id.
          assert.deepStrictEqual(yield* Session.run(Session.readStream(id)), [])
        }))
    })

    describe("writeToAggregate and CommandHandler", () => {
      it.effect("writeToAggregate fetches, runs and saves, returning the new state without another read", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          const result = yield* EventStore.writeToAggregate(Order, id, (stream) => stream.appendOne(new ItemReady({ name: "a" })))
          assert.strictEqual(result.version, 2)
          assert.strictEqual(result.events.length, 1)
          assert.deepStrictEqual(Option.map(result.state, (o) => o.items.map((i) => i.ready)), Option.some([true, false]))
          const stale = yield* Effect.flip(
            EventStore.writeToAggregate(Order, id, (stream) => stream.appendOne(new OrderReady()), { expectedVersion: 1 })
          )
          assert.deepInclude(stale, { _tag: "ConcurrencyError", expectedVersion: 1, actualVersion: 2 })
        }))

      it.effect("a CommandHandler retries on ConcurrencyError only", () =>
        Effect.gen(function*() {
          const id = newId("counter")
          let decisions = 0
          const handler = CommandHandler.make(Counter, {
            id: (_: string) => id,
            decide: (command, state) =>
              Effect.gen(function*() {
                decisions++
                if (decisions === 1) {
                  // a concurrent writer moves the stream after our fetch
                  yield* Session.run(Effect.zipRight(
                    Session.append(Counter, id, [new Incremented({ by: 100, command: "other" })]),
                    Session.saveChanges
                  ))
                }
                if (command === "reject") return yield* Effect.fail("rejected" as const)
                return [new Incremented({ by: Option.match(state, { onNone: () => 1, onSome: () => 2 }), command })]
              }),
            retry: Schedule.recurs(3)
          })
          const result = yield* handler("go")
          assert.strictEqual(decisions, 2)
          assert.strictEqual(result.version, 2)
          assert.deepStrictEqual(result.state, Option.some({ total: 102, commands: ["other", "go"] }))
          const rejected = yield* Effect.flip(handler("reject"))
          assert.strictEqual(rejected, "rejected")
          assert.strictEqual(decisions, 3) // not retried
        }))

      it.effect("without a retry schedule, a conflict surfaces", () =>
        Effect.gen(function*() {
          const id = newId("counter")
          const handler = CommandHandler.make(Counter, {
            id: (_: string) => id,
            decide: (command) =>
              Effect.as(
                Session.run(Effect.zipRight(
                  Session.append(Counter, id, [new Incremented({ by: 1, command: "other" })]),
                  Session.saveChanges
                )),
                [new Incremented({ by: 1, command })]
              )
          })
          const error = yield* Effect.flip(handler("go"))
          assert.strictEqual(error._tag, "ConcurrencyError")
        }))

      const torture = (exclusive: boolean) =>
        Effect.gen(function*() {
          const streams = Array.from({ length: 4 }, () => newId(exclusive ? "torture-x" : "torture"))
          let decisions = 0
          const handler = CommandHandler.make(Counter, {
            id: (command: { stream: string; name: string }) => command.stream,
            decide: (command, state) => {
              decisions++
              const total = Option.match(state, { onNone: () => 0, onSome: (s) => s.total })
              return [new Incremented({ by: 1, command: command.name, total: total + 1 })]
            },
            retry: Schedule.spaced("1 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(500))),
            exclusive,
            timeout: "30 seconds"
          })
          const failures = Metric.tagged(Metric.tagged(ProjectionDaemon.metrics.failures, "projection", "Counter"), "version", "1")
          const failedBefore = (yield* Metric.value(failures)).count
          const fibers = 8
          const perFiber = 25
          yield* Effect.forEach(
            Array.from({ length: fibers }, (_, f) => f),
            (f) =>
              Effect.forEach(
                Array.from({ length: perFiber }, (_, i) => i),
                (i) => handler({ stream: streams[(f + i) % streams.length], name: `f${f}-c${i}` }),
                { discard: true }
              ),
            { concurrency: fibers, discard: true }
          )
          const all = yield* Effect.forEach(streams, (id) => Session.run(Session.readStream(id)))
          const names = all.flat().map((e) => (e.data as any).command as string)
          // Every command landed exactly once...
          assert.strictEqual(names.length, fibers * perFiber)
          assert.strictEqual(new Set(names).size, fibers * perFiber)
          for (const events of all) {
            // ...versions are contiguous from 1, and each decision saw the state right before it.
            assert.deepStrictEqual(events.map((e) => e.version), Array.from({ length: events.length }, (_, i) => i + 1))
            assert.deepStrictEqual(events.map((e) => (e.data as any).total), Array.from({ length: events.length }, (_, i) => i + 1))
          }
          const sequences = all.flat().map((e) => e.sequence).sort((a, b) => a - b)
          assert.strictEqual(sequences[sequences.length - 1] - sequences[0] + 1, sequences.length, "no sequence lost")
          // Under exclusive locks nobody ever decides on a stale state, so nothing is retried.
          if (exclusive) assert.strictEqual(decisions, fibers * perFiber)
          else assert.isAbove(decisions, fibers * perFiber, "the optimistic run did meet conflicts")
          if (lifecycle === "Async") {
            // Commit order is not version order here; the daemon must project it without a single failed batch.
            yield* ProjectionDaemon.waitForNonStale({ timeout: "30 seconds" })
            assert.strictEqual((yield* Metric.value(failures)).count, failedBefore, "the daemon never failed")
            for (const [i, id] of streams.entries()) {
              const total = all[i].length
              assert.deepStrictEqual(
                Option.map(yield* Session.run(Session.loadDocument(Projection.snapshot(Counter, "Async"), id)), (s) => s.total),
                Option.some(total)
              )
            }
          }
        })

      it.effect("torture: 8 fibers x 25 commands over 4 streams, optimistic with retry", () => torture(false), {
        timeout: 120_000
      })
      it.effect("torture: 8 fibers x 25 commands over 4 streams, exclusive", () => torture(true), { timeout: 120_000 })
    })

    describe("what the review found", () => {
      it.effect("saves of the same two streams in opposite orders do not deadlock", () =>
        Effect.gen(function*() {
          const a = newId("a")
          const b = newId("b")
          yield* Effect.forEach(Array.from({ length: 24 }, (_, i) => i), (i) =>
            Session.run(Effect.gen(function*() {
              const [first, second] = i % 2 === 0 ? [a, b] : [b, a]
              yield* Session.append(Counter, first, [new Incremented({ by: 1, command: `${i}` })])
              yield* Session.append(Counter, second, [new Incremented({ by: 1, command: `${i}` })])
              return yield* Session.saveChanges
            })), { concurrency: 8, discard: true })
          assert.strictEqual(yield* versionOf(a), 24)
          assert.strictEqual(yield* versionOf(b), 24)
        }))

      it.effect("event timestamps follow version order, even from a session whose transaction began earlier", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          yield* Session.run(Effect.gen(function*() {
            // This session's transaction starts now...
            yield* Session.fetchForExclusiveWriting(Order, newId("other"))
            yield* Effect.sleep("50 millis")
            // ...another session appends version 2...
            yield* seed(id, [new ItemReady({ name: "a" })])
            // ...and this one appends version 3 later.
            yield* Session.append(Order, id, [new ItemReady({ name: "b" })])
            yield* Session.saveChanges
          }))
          const events = yield* Session.run(Session.readStream(id))
          assert.isAtLeast(events[2].timestamp.getTime(), events[1].timestamp.getTime())
          const asOf = yield* Session.run(Session.aggregateStream(Order, id, { timestamp: events[2].timestamp }))
          assert.deepStrictEqual(Option.map(asOf, (o) => o.items.map((i) => i.ready)), Option.some([true, true]))
        }))

      it.effect("an exclusive fetch's lock time-out does not bound the save's other waits", () =>
        Effect.gen(function*() {
          const a = newId("a")
          const b = newId("b")
          const saved = yield* Session.run(Effect.gen(function*() {
            yield* Session.fetchForExclusiveWriting(Order, a, { timeout: "100 millis" })
            // Another session holds b for 400 ms, then saves.
            const holder = yield* Effect.fork(Session.run(Effect.gen(function*() {
              const s = yield* Session.fetchForExclusiveWriting(Order, b)
              yield* Effect.sleep("400 millis")
              yield* s.appendOne(created("held"))
              yield* Session.saveChanges
            })))
            yield* Effect.sleep("50 millis")
            yield* Session.append(Order, b, [new OrderShipped()])
            const saved = yield* Session.saveChanges
            yield* Fiber.join(holder)
            return saved
          }))
          assert.strictEqual(saved.streams[0].version, 2)
        }))

      it.effect("after a failed save the session starts clean: a retry in it appends once", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a", "b")])
          yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* seed(id, [new ItemReady({ name: "b" })])
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            const error = yield* Effect.flip(Session.saveChanges)
            assert.strictEqual(error._tag, "ConcurrencyError")
            const again = yield* Session.fetchForWriting(Order, id)
            yield* again.appendOne(new ItemReady({ name: "a" }))
            yield* Session.saveChanges
          }))
          const events = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => [e.version, (e.data as any).name]), [[1, undefined], [2, "b"], [3, "a"]])
        }))

      it.effect("a stream used again after its save appends at the saved version", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const saved = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.appendOne(created("a", "b"))
            yield* Session.saveChanges
            yield* stream.appendOne(new ItemReady({ name: "a" }))
            return yield* Session.saveChanges
          }))
          assert.deepStrictEqual(saved.streams.map((s) => [s.previousVersion, s.version]), [[1, 2]])
        }))

      it.effect("each appended event is encoded with the aggregate it was appended with", () =>
        Effect.gen(function*() {
          const id = newId("mixed")
          yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Odd, id)
            yield* stream.appendOne(new WithNumber({ n: 1 }))
            yield* Session.append(AlienAggregate, id, [new Alien({ x: 1 })])
            yield* Session.saveChanges
          }))
          const events = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(events.map((e) => e.type), ["WithNumber", "Alien"])
        }))

      it.effect("an event whose encoded form is not JSON is an EventEncodeError, and nothing is written", () =>
        Effect.gen(function*() {
          const id = newId("odd")
          for (const event of [new WithDate({ at: new Date() }), new WithNumber({ n: Number.NaN })]) {
            const error = yield* Effect.flip(Session.run(Effect.zipRight(Session.append(Odd, id, [event]), Session.saveChanges)))
            assert.deepInclude(error, { _tag: "EventEncodeError", streamId: id })
            assert.match((error as any).message, /JSON/)
          }
          assert.strictEqual(yield* versionOf(id), 0)
        }))
    })

    describe("bad input", () => {
      const ids: Array<[string, unknown, string]> = [
        ["empty", "", "must not be empty"],
        ["blank", "   ", "white space"],
        ["over-long", "x".repeat(201), "at most 200"],
        ["not a string", 42, "must be a string"],
        ["NUL", "a\u0000b", "NUL"]
      ]
      for (const [label, id, reason] of ids) {
        it.effect(`a ${label} stream id is an InvalidStreamIdError naming it, and nothing is written`, () =>
          Effect.gen(function*() {
            for (
              const attempt of [
                Session.fetchForWriting(Order, id as string),
                Session.fetchForExclusiveWriting(Order, id as string),
                Session.fetchLatest(Order, id as string),
                Session.readStream(id as string),
                Session.readStream(Order, id as string),
                Effect.zipRight(Session.append(Order, id as string, [created("a")]), Session.saveChanges),
                Effect.zipRight(Session.startStream(Order, id as string, [created("a")]), Session.saveChanges)
              ] as const
            ) {
              const error = yield* Effect.flip(Session.run(attempt as Effect.Effect<unknown, any, Session.Session>))
              assert.strictEqual(error._tag, "InvalidStreamIdError")
              assert.strictEqual(error.streamId, id)
              assert.include(error.reason, reason)
            }
          }))
      }

      it.effect("a negative or fractional expected version is an InvalidExpectedVersionError, and nothing is written", () =>
        Effect.gen(function*() {
          const id = newId("order")
          for (const expectedVersion of [-1, 1.5, Number.NaN]) {
            const e1 = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id, { expectedVersion })))
            assert.deepInclude(e1, { _tag: "InvalidExpectedVersionError", streamId: id })
            const e2 = yield* Effect.flip(Session.run(Effect.zipRight(
              Session.append(Order, id, [created("a")], { expectedVersion }),
              Session.saveChanges
            )))
            assert.strictEqual(e2._tag, "InvalidExpectedVersionError")
          }
          assert.strictEqual(yield* versionOf(id), 0)
        }))

      it.effect("an event its schema rejects is an EventEncodeError naming it; nothing of the save is written", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const other = newId("order")
          const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* Session.append(Order, other, [created("ok")])
            yield* stream.appendOne(created("a"))
            yield* stream.appendOne({ _tag: "ItemReady", name: 42 } as any)
            return yield* Session.saveChanges
          })))
          assert.deepInclude(error, { _tag: "EventEncodeError", streamId: id, eventType: "ItemReady" })
          assert.strictEqual(yield* versionOf(id), 0)
          assert.strictEqual(yield* versionOf(other), 0)
        }))

      it.effect("a stored event of an unknown type is an EventDecodeError naming stream, version and type", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          yield* Session.run(Effect.zipRight(Session.append(AlienAggregate, id, [new Alien({ x: 1 })]), Session.saveChanges))
          const error = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id)))
          assert.deepInclude(error, { _tag: "EventDecodeError", streamId: id, version: 2, eventType: "Alien" })
          const latest = yield* Effect.flip(Session.run(Session.fetchLatest(Order, id)))
          assert.strictEqual(latest._tag, "EventDecodeError")
          const read = yield* Effect.flip(Session.run(Session.readStream(Order, id)))
          assert.deepInclude(read, { _tag: "EventDecodeError", streamId: id, version: 2, eventType: "Alien" })
          // Read raw, or as the aggregate that wrote it, the event is there.
          assert.strictEqual((yield* Session.run(Session.readStream(id))).length, 2)
          assert.strictEqual((yield* Session.run(Session.readStream(Order, id, { toVersion: 1 }))).length, 1)
        }))

      it.effect("a stored payload the schema rejects is an EventDecodeError", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          yield* Session.run(Effect.zipRight(Session.append(BadAggregate, id, [new BadItemReady({ name: 7 })]), Session.saveChanges))
          const error = yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id)))
          assert.deepInclude(error, { _tag: "EventDecodeError", streamId: id, version: 2, eventType: "ItemReady" })
          assert.include(error.message, "Expected string")
          const read = yield* Effect.flip(Session.run(Session.readStream(Order, id)))
          assert.deepInclude(read, { _tag: "EventDecodeError", streamId: id, version: 2, eventType: "ItemReady" })
        }))

      // One table of bad inputs: each is the same typed error on both stores, naming the field, and writes nothing.
      const badEvents: Array<[string, unknown, EventMetadata, RegExp]> = [
        ["a NUL in a payload string", new Anything({ value: { text: "a\u0000b" } }), {}, /\$\.value\.text holds a NUL character/],
        ["a lone high surrogate in a payload string", new Anything({ value: "a\uD800b" }), {}, /\$\.value holds a lone surrogate \(\\uD800\)/],
        ["a lone low surrogate in a payload string", new Anything({ value: ["\uDC00"] }), {}, /\$\.value\[0\] holds a lone surrogate \(\\uDC00\)/],
        ["a surrogate pair reversed in a payload string", new Anything({ value: "\uDC00\uD800" }), {}, /lone surrogate \(\\uDC00\)/],
        ["a NUL in a payload key", new Anything({ value: { "k\u0000": 1 } }), {}, /\$\.value has a key holding a NUL character/],
        ["a lone surrogate in a payload key", new Anything({ value: { "k\uDBFF": 1 } }), {}, /\$\.value has a key holding a lone surrogate/],
        ["a NUL in the event type", new NulTyped(), {}, /the event type holds a NUL character/],
        ["a lone surrogate in the event type", new SurrogateTyped(), {}, /the event type holds a lone surrogate/],
        ["a bigint in a payload", new Anything({ value: { n: 1n } }), {}, /\$\.value\.n is a bigint/],
        ["a function in a payload", new Anything({ value: { f: () => 1 } }), {}, /\$\.value\.f is a function/],
        ["a Date in a payload", new Anything({ value: new Date(0) }), {}, /\$\.value is a Date/],
        ["a payload nested 100,000 deep", new Anything({ value: nested(100_000) }), {}, /nested more than 1000 levels deep/],
        ["a payload nested 1,001 deep", new Anything({ value: nested(1000) }), {}, /nested more than 1000 levels deep/],
        ["a bigint in a header", new Anything({ value: 1 }), { headers: { n: 1n } }, /metadata: headers\.n is a bigint/],
        ["a function in a header", new Anything({ value: 1 }), { headers: { f: () => 1 } }, /metadata: headers\.f is a function/],
        ["a Date in a header", new Anything({ value: 1 }), { headers: { at: new Date(0) } }, /metadata: headers\.at is a Date/],
        ["a NUL in a header", new Anything({ value: 1 }), { headers: { h: "a\u0000" } }, /metadata: headers\.h holds a NUL character/],
        ["a NUL in a header key", new Anything({ value: 1 }), { headers: { "h\u0000": "a" } }, /metadata: headers has a key holding a NUL/],
        ["a lone surrogate in a header", new Anything({ value: 1 }), { headers: { h: ["\uD83D"] } }, /metadata: headers\.h\[0\] holds a lone surrogate/],
        ["headers nested 100,000 deep", new Anything({ value: 1 }), { headers: { h: nested(100_000) } }, /metadata: headers\.h.* is nested more than 1000/],
        ["headers that are not an object", new Anything({ value: 1 }), { headers: [1] as any }, /metadata: headers must be an object, got an array/],
        ["a NUL in a correlation id", new Anything({ value: 1 }), { correlationId: "c\u0000" }, /metadata: correlationId holds a NUL character/],
        ["a lone surrogate in a causation id", new Anything({ value: 1 }), { causationId: "c\uDFFF" }, /metadata: causationId holds a lone surrogate/],
        ["a correlation id that is not a string", new Anything({ value: 1 }), { correlationId: 42 as any }, /metadata: correlationId must be a string, got number/]
      ]
      for (const [label, event, metadata, message] of badEvents) {
        it.effect(`${label} is an EventEncodeError naming it, and nothing is written`, () =>
          Effect.gen(function*() {
            const id = newId("bad")
            const other = newId("bad")
            const error = yield* Effect.flip(Session.run(Effect.gen(function*() {
              // A valid stream in the same save: it is not written either.
              yield* Session.append(Loose, other, [new Anything({ value: 1 })])
              yield* EventStore.withMetadata(Session.append(Loose, id, [event as Anything]), metadata)
              return yield* Session.saveChanges
            })))
            assert.strictEqual(error._tag, "EventEncodeError")
            assert.deepInclude(error, { streamId: id, eventType: (event as { _tag: string })._tag })
            assert.match(error.message, message)
            assert.strictEqual(yield* versionOf(id), 0)
            assert.strictEqual(yield* versionOf(other), 0)
          }))
      }

      for (const [label, id] of [["high", "order-\uD800"], ["low", "order-\uDC00x"]] as const) {
        it.effect(`a stream id holding a lone ${label} surrogate is an InvalidStreamIdError (PostgreSQL would fold it into U+FFFD)`, () =>
          Effect.gen(function*() {
            for (
              const attempt of [
                Session.fetchForWriting(Order, id),
                Session.fetchForExclusiveWriting(Order, id),
                Session.readStream(id),
                Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges)
              ] as const
            ) {
              const error = yield* Effect.flip(Session.run(attempt as Effect.Effect<unknown, any, Session.Session>))
              assert.deepInclude(error, { _tag: "InvalidStreamIdError", streamId: id })
              assert.include(error.reason, "lone surrogate")
            }
            assert.strictEqual(yield* versionOf("order-\uFFFD"), 0)
          }))
      }

      it.effect("what is valid next to the bad inputs is stored and read back exactly: surrogate pairs, 1,000 levels of nesting, -0 as 0", () =>
        Effect.gen(function*() {
          const id = newId("𝄞-pair")
          const value = { text: "𝄞 \uD83D\uDE00", "key 𝄞": true, deep: nested(998), zero: -0, zeros: [-0, { z: -0 }] }
          yield* Session.run(EventStore.withMetadata(
            Effect.zipRight(Session.append(Loose, id, [new Anything({ value })]), Session.saveChanges),
            { correlationId: "c-𝄞", headers: { zero: -0, deep: nested(999) } }
          ))
          const [stored] = yield* Session.run(Session.readStream(id))
          const data = stored.data as { value: typeof value }
          assert.strictEqual(data.value.text, value.text)
          assert.isTrue(data.value["key 𝄞"])
          assert.deepStrictEqual(data.value.deep, nested(998))
          // jsonb stores -0 as 0: both stores keep 0, in payloads and headers alike.
          assert.isTrue(Object.is(data.value.zero, 0))
          assert.isTrue(Object.is(data.value.zeros[0], 0))
          assert.isTrue(Object.is((data.value.zeros[1] as { z: number }).z, 0))
          assert.isTrue(Object.is(stored.headers.zero, 0))
          assert.deepStrictEqual(stored.headers.deep, nested(999))
          assert.strictEqual(stored.correlationId, "c-𝄞")
        }))

      const badTimeouts: Array<[string, Duration.DurationInput]> = [
        ["Infinity", Number.POSITIVE_INFINITY],
        ["an infinite Duration", Duration.infinity],
        ["NaN", Number.NaN],
        ["negative", -1],
        ["a negative string", "-5 millis"],
        ["2^31 ms", 2 ** 31],
        ["25 days", "25 days"],
        ["not a Duration", "soon" as Duration.DurationInput]
      ]
      for (const [label, timeout] of badTimeouts) {
        it.effect(`a lock time-out of ${label} is an InvalidOptionError at the call, and nothing is written or locked`, () =>
          Effect.gen(function*() {
            const id = newId("order")
            const attempts = [
              Session.run(Effect.zipRight(Session.fetchForExclusiveWriting(Order, id, { timeout }), Session.saveChanges)),
              EventStore.writeToAggregate(Order, id, (stream) => stream.appendOne(created("a")), { exclusive: true, timeout }),
              CommandHandler.make(Order, { id: (c: string) => c, decide: () => [created("a")], exclusive: true, timeout })(id)
            ]
            for (const attempt of attempts) {
              const error = yield* Effect.flip(attempt as Effect.Effect<unknown, any, EventStore.EventStore>)
              assert.deepInclude(error, { _tag: "InvalidOptionError", option: "timeout" })
              assert.isTrue(Object.is(error.value, timeout))
            }
            assert.strictEqual(yield* versionOf(id), 0)
            // Nothing was left locked: another exclusive fetch gets the stream at once.
            yield* Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "1 second" }))
          }))
      }

      it.effect("the longest valid lock time-out (2^31 - 1 ms) works on both stores", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const result = yield* EventStore.writeToAggregate(Order, id, (stream) => stream.appendOne(created("a")), {
            exclusive: true,
            timeout: 2 ** 31 - 1
          })
          assert.strictEqual(result.version, 1)
        }))

      it.effect("a store lockTimeout option no store can honour is an InvalidOptionError when the layer is built", () =>
        Effect.gen(function*() {
          for (const [, lockTimeout] of badTimeouts) {
            const error = yield* Effect.flip(Effect.scoped(Layer.build(store.withLockTimeout(lockTimeout))))
            assert.deepInclude(error, { _tag: "InvalidOptionError", option: "lockTimeout" })
          }
          const ok = yield* Effect.scoped(Effect.flatMap(Layer.build(store.withLockTimeout(2 ** 31 - 1)), (context) =>
            EventStore.writeToAggregate(Order, newId("order"), (stream) => stream.appendOne(created("a")), { exclusive: true })
              .pipe(Effect.provide(context))
          ))
          assert.strictEqual(ok.version, 1)
        }))

      it.effect("an interrupted save writes nothing", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id, [created("a")])
          yield* Session.run(Effect.gen(function*() {
            // Hold the lock so that the other save has to wait, then interrupt it mid-save.
            yield* Session.fetchForExclusiveWriting(Order, id)
            const saving = yield* Effect.fork(Session.run(Effect.zipRight(
              Session.append(Order, id, [new ItemReady({ name: "a" })]),
              Session.saveChanges
            )))
            yield* Effect.sleep("100 millis")
            assert.isTrue(Option.isNone(yield* Fiber.poll(saving)))
            yield* Fiber.interrupt(saving)
          }))
          yield* Effect.sleep("50 millis")
          assert.strictEqual(yield* versionOf(id), 1)
          // And the store is fully usable afterwards.
          const next = yield* seed(id, [new ItemReady({ name: "a" })])
          assert.strictEqual(next.streams[0].version, 2)
        }))
    })
  })
