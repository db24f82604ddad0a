/**
 * Archiving, on both stores: `Session.archiveStream` is pending in the unit of
 * work and written atomically by `saveChanges`; an archived stream is read but
 * never written again, and readAll, subscriptions and projections pass over it.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import {
  Aggregate,
  CommandHandler,
  EventStore,
  Projection,
  ProjectionDaemon,
  Session,
  StreamArchivedError,
  Subscription
} from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

const created = (...names: Array<string>) => new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })
const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))
const seed = (id: string) => save(Session.append(Order, id, [created("a")]))
const archive = (id: string) => save(Session.archiveStream(id))
const versions = (id: string) => Session.run(Effect.map(Session.readStream(id), (es) => es.map((e) => e.version)))
const isArchivedError = (id: string) => (error: unknown) => {
  assert.instanceOf(error, StreamArchivedError)
  assert.strictEqual((error as StreamArchivedError).streamId, id)
  assert.include((error as StreamArchivedError).message, id)
}

// A multi-stream view over Order events (Async): how many events each tenant's orders had.
class Tallied extends Schema.TaggedClass<Tallied>()("ArchTallied", { board: Schema.String }) {}
const Tally = Aggregate.make({ name: "ArchTally", events: Tallied, initial: 0, evolve: (n) => n + 1 })
const Board = Projection.multiStream({
  name: "ArchBoard",
  events: Tallied,
  state: Schema.Array(Schema.String),
  initial: [] as ReadonlyArray<string>,
  key: (envelope) => envelope.data.board,
  evolve: (state, _event, envelope) => [...state, envelope.streamId],
  lifecycle: "Async"
})
const delivered: Array<string> = []
const Reactor = Subscription.make({
  name: "ArchReactor",
  events: Tallied,
  handle: (envelope) => Effect.sync(() => void delivered.push(envelope.streamId))
})

// Runs `effect` until its value passes `done`, for at most 20 seconds.
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean) =>
  Effect.flatMap(effect, (a) => done(a) ? Effect.succeed(a) : Effect.fail("not yet" as const)).pipe(
    Effect.retry(Schedule.spaced("20 millis")),
    Effect.timeout("20 seconds")
  )

// The smallest recording tracer: each span's name and how it ended.
const recording = () => {
  const ended: Array<{ name: string; exit: Exit.Exit<unknown, unknown>; attributes: Map<string, unknown> }> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const attributes = new Map<string, unknown>()
      return {
        _tag: "Span", name, spanId: Math.random().toString(16).slice(2), traceId: "t", parent, context: context as Context.Context<never>,
        status: { _tag: "Started", startTime }, attributes, links, sampled: true, kind,
        end: (_end, exit) => void ended.push({ name, exit, attributes }),
        attribute: (key, value) => void attributes.set(key, value), event: () => {}, addLinks: () => {}
      }
    },
    context: (f) => f()
  })
  return { ended, traced: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withTracer(effect, tracer) }
}

export const archiving = (store: StoreUnderTest, lifecycle: "Live" | "Inline" | "Async") => {
  const registrations = lifecycle === "Live" ? [Board, Reactor] : [Projection.snapshot(Order, lifecycle), Board, Reactor]
  return layer(store.layer(registrations), { excludeTestServices: true })(
    `archiving: ${store.name}${store.variant === undefined ? "" : `, ${store.variant}`}, ${lifecycle}`,
    (it) => {
      it.effect("after the save, writes fail with StreamArchivedError and write nothing; reads still read", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* save(Session.append(Order, id, [created("a"), new ItemReady({ name: "a" })]))
          // Pending until the save: the same session still writes to it.
          yield* Session.run(Effect.gen(function*() {
            yield* Session.archiveStream(id)
            const stream = yield* Session.fetchForWriting(Order, id)
            assert.strictEqual(stream.version, 2)
          }))
          assert.strictEqual((yield* Session.run(Session.fetchForWriting(Order, id))).version, 2)
          yield* archive(id)
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id))))
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id, { expectedVersion: 2 }))))
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, id))))
          isArchivedError(id)(yield* Effect.flip(save(Session.append(Order, id, [new OrderReady()]))))
          isArchivedError(id)(yield* Effect.flip(save(Session.append(Order, id, [new OrderReady()], { expectedVersion: 2 }))))
          isArchivedError(id)(yield* Effect.flip(save(Session.startStream(Order, id, [created("b")]))))
          assert.deepStrictEqual(yield* versions(id), [1, 2])
          const latest = yield* Session.run(Session.fetchLatest(Order, id))
          assert.deepStrictEqual(Option.map(latest, (s) => s.items.map((i) => i.ready)), Option.some([true]))
          const asOf1 = yield* Session.run(Session.aggregateStream(Order, id, { version: 1 }))
          assert.deepStrictEqual(Option.map(asOf1, (s) => s.items.map((i) => i.ready)), Option.some([false]))
          const typed = yield* Session.run(Session.readStream(Order, id))
          assert.deepStrictEqual(typed.map((e) => e.data._tag), ["OrderCreated", "ItemReady"])
        }))

      it.effect("one save appends a last event and archives, atomically; a failing save archives nothing", () =>
        Effect.gen(function*() {
          const id = newId("order")
          const other = newId("order")
          yield* seed(id)
          yield* seed(other)
          // The other stream conflicts: the whole save fails, the stream stays writable.
          const failed = yield* Effect.flip(save(Effect.gen(function*() {
            yield* Session.append(Order, id, [new OrderReady()])
            yield* Session.archiveStream(id)
            yield* Session.append(Order, other, [new OrderReady()], { expectedVersion: 0 })
          })))
          assert.strictEqual(failed._tag, "ConcurrencyError")
          assert.deepStrictEqual(yield* versions(id), [1])
          assert.strictEqual((yield* Session.run(Session.fetchForWriting(Order, id))).version, 1)
          // A session that never saves archives nothing.
          yield* Session.run(Session.archiveStream(id))
          assert.strictEqual((yield* Session.run(Session.fetchForWriting(Order, id))).version, 1)
          // The last event and the archive together.
          const result = yield* save(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.appendOne(new OrderReady())
            yield* Session.archiveStream(id)
          }))
          assert.deepStrictEqual(result.streams.map((s) => [s.streamId, s.version]), [[id, 2]])
          assert.deepStrictEqual(yield* versions(id), [1, 2])
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id))))
          // A new stream started and archived in one save.
          const fresh = newId("order")
          yield* save(Effect.zipRight(Session.startStream(Order, fresh, [created("x")]), Session.archiveStream(fresh)))
          isArchivedError(fresh)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, fresh))))
        }))

      it.effect("archiving twice is archiving once; an id with no events is left alone (the id stays free)", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          yield* save(Effect.zipRight(Session.archiveStream(id), Session.archiveStream(id)))
          yield* archive(id)
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id))))
          const none = newId("order")
          const result = yield* archive(none)
          assert.deepStrictEqual(result.streams, [])
          assert.strictEqual((yield* Session.run(Session.fetchForWriting(Order, none))).version, 0)
          yield* save(Session.startStream(Order, none, [created("a")]))
          assert.deepStrictEqual(yield* versions(none), [1])
          // A bad id is refused at once.
          const bad = yield* Effect.flip(Session.run(Session.archiveStream("")))
          assert.strictEqual(bad._tag, "InvalidStreamIdError")
        }))

      it.effect("archiving is per tenant: the same id in another tenant stays writable", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* EventStore.withTenant(seed(id), "arch-a")
          yield* EventStore.withTenant(seed(id), "arch-b")
          yield* EventStore.withTenant(archive(id), "arch-a")
          isArchivedError(id)(yield* Effect.flip(EventStore.withTenant(Session.run(Session.fetchForWriting(Order, id)), "arch-a")))
          yield* EventStore.withTenant(save(Session.append(Order, id, [new OrderReady()])), "arch-b")
          assert.deepStrictEqual(yield* EventStore.withTenant(versions(id), "arch-b"), [1, 2])
          // Archives of two tenants in one session are refused whole, like their appends.
          const two = yield* Effect.flip(Session.run(Effect.gen(function*() {
            yield* EventStore.withTenant(Session.archiveStream(id), "arch-b")
            yield* EventStore.withTenant(Session.archiveStream(id), "arch-c")
            yield* Session.saveChanges
          })))
          assert.strictEqual(two._tag, "EventStoreError")
          assert.deepStrictEqual(yield* EventStore.withTenant(versions(id), "arch-b"), [1, 2])
          yield* EventStore.withTenant(save(Session.append(Order, id, [new OrderReady()])), "arch-b")
        }))

      it.effect("a save of a stream fetched before the archive fails with StreamArchivedError; the command workflow does not retry it", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          const late = yield* Effect.flip(Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* archive(id)
            yield* stream.appendOne(new OrderReady())
            yield* Session.saveChanges
          })))
          isArchivedError(id)(late)
          // An assertion with nothing appended fails the same way.
          const other = newId("order")
          yield* seed(other)
          const asserted = yield* Effect.flip(Session.run(Effect.gen(function*() {
            yield* Session.fetchForWriting(Order, other, { alwaysEnforceConsistency: true })
            yield* archive(other)
            yield* Session.saveChanges
          })))
          isArchivedError(other)(asserted)
          // writeToAggregate with a retry: archived during its first try, it is tried once.
          const third = newId("order")
          yield* seed(third)
          let attempts = 0
          const written = yield* Effect.flip(EventStore.writeToAggregate(Order, third, (stream) =>
            Effect.gen(function*() {
              attempts++
              if (attempts === 1) yield* archive(third)
              yield* stream.appendOne(new OrderReady())
            }), { retry: Schedule.recurs(5) }))
          isArchivedError(third)(written)
          assert.strictEqual(attempts, 1)
          // CommandHandler: the fetch fails, decide never runs, nothing retried.
          let decided = 0
          const handle = CommandHandler.make(Order, {
            id: (cmd: { id: string }) => cmd.id,
            decide: () => {
              decided++
              return [new OrderReady()]
            },
            retry: Schedule.recurs(5)
          })
          isArchivedError(third)(yield* Effect.flip(handle({ id: third })))
          assert.strictEqual(decided, 0)
          assert.deepStrictEqual(yield* versions(third), [1])
        }))

      it.effect("the save span ends failed with StreamArchivedError", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          yield* archive(id)
          const { ended, traced } = recording()
          yield* Effect.flip(traced(save(Session.append(Order, id, [new OrderReady()]))))
          const span = ended.find((s) => s.name === "chronicle.saveChanges")!
          assert.isTrue(Exit.isFailure(span.exit))
          assert.strictEqual(span.attributes.get("error.type"), "StreamArchivedError")
          yield* Effect.flip(traced(Session.run(Session.fetchForWriting(Order, id))))
          const fetch = ended.find((s) => s.name === "chronicle.fetchForWriting")!
          assert.isTrue(Exit.isFailure(fetch.exit))
          assert.strictEqual(fetch.attributes.get("error.type"), "StreamArchivedError")
        }))

      it.effect("concurrent blind appends racing an archive: each commits before it or fails with StreamArchivedError", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          const appends = Array.from({ length: 24 }, () => Effect.either(save(Session.append(Order, id, [new OrderReady()]))))
          const [results] = yield* Effect.all([
            Effect.all(appends, { concurrency: "unbounded" }),
            Effect.zipRight(Effect.sleep("2 millis"), archive(id))
          ], { concurrency: "unbounded" })
          const ok = results.filter((r) => r._tag === "Right").length
          for (const r of results) if (r._tag === "Left") isArchivedError(id)(r.left)
          // Exactly the successful appends are in; after the archive nothing more lands.
          assert.deepStrictEqual(yield* versions(id), Array.from({ length: 1 + ok }, (_, i) => i + 1))
          isArchivedError(id)(yield* Effect.flip(save(Session.append(Order, id, [new OrderReady()]))))
          assert.strictEqual((yield* versions(id)).length, 1 + ok)
        }))

      it.effect("concurrent saves of many streams, some archived: only the archived ones fail", () =>
        Effect.gen(function*() {
          const ids = Array.from({ length: 40 }, () => newId("order"))
          yield* Effect.forEach(ids, seed, { concurrency: 8, discard: true })
          yield* Effect.forEach(ids.filter((_, i) => i % 4 === 0), archive, { concurrency: 4, discard: true })
          const results = yield* Effect.forEach(ids, (id, i) =>
            Effect.either(save(Session.append(Order, id, [new OrderReady()], i % 2 === 0 ? { expectedVersion: 1 } : undefined))), {
            concurrency: "unbounded"
          })
          for (const [i, r] of results.entries()) {
            if (i % 4 === 0) {
              assert.strictEqual(r._tag, "Left")
              if (r._tag === "Left") isArchivedError(ids[i])(r.left)
            } else assert.strictEqual(r._tag, "Right")
          }
          const lengths = yield* Effect.forEach(ids, (id) => Effect.map(versions(id), (v) => v.length))
          assert.deepStrictEqual(lengths, ids.map((_, i) => i % 4 === 0 ? 1 : 2))
        }))

      it.effect("an archive waits for a session holding the stream's lock: that session's save lands first", () =>
        Effect.gen(function*() {
          const id = newId("order")
          yield* seed(id)
          yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForExclusiveWriting(Order, id)
            const archiver = yield* Effect.fork(archive(id))
            yield* Effect.sleep("50 millis")
            assert.isUndefined(archiver.unsafePoll() ?? undefined)
            yield* stream.appendOne(new OrderReady())
            yield* Session.saveChanges
            yield* Fiber.join(archiver)
          }))
          assert.deepStrictEqual(yield* versions(id), [1, 2])
          isArchivedError(id)(yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id))))
        }))

      it.effect("readAll leaves archived streams out unless includeArchived", () =>
        Effect.gen(function*() {
          const tenant = newId("arch-tenant")
          const [kept, gone] = [newId("order"), newId("order")]
          const all = (options?: { includeArchived?: boolean }) =>
            EventStore.withTenant(
              Effect.map(Stream.runCollect(EventStore.readAll(options)), (c) => Array.from(c, (e) => `${e.streamId}@${e.version}`)),
              tenant
            )
          yield* EventStore.withTenant(Effect.zipRight(seed(kept), seed(gone)), tenant)
          yield* EventStore.withTenant(save(Session.append(Order, gone, [new OrderReady()])), tenant)
          yield* EventStore.withTenant(archive(gone), tenant)
          assert.deepStrictEqual(yield* all(), [`${kept}@1`])
          assert.deepStrictEqual(yield* all({ includeArchived: true }), [`${kept}@1`, `${gone}@1`, `${gone}@2`])
          assert.deepStrictEqual(yield* all({ includeArchived: false }), [`${kept}@1`])
        }))

      it.effect("projections and subscriptions pass over archived streams' events (as readAll does)", () =>
        Effect.gen(function*() {
          const board = newId("board")
          const [kept, gone] = [newId("tally"), newId("tally")]
          // Archived before the daemon ever sees them (no daemon runs here): the rebuild skips them.
          yield* save(Session.append(Tally, kept, [new Tallied({ board })]))
          yield* save(Session.append(Tally, gone, [new Tallied({ board }), new Tallied({ board })]))
          yield* archive(gone)
          // (A rebuild stops at the gap-safe horizon, which another session's open
          // transaction on the database can hold back: rebuilt until it got past ours.)
          const doc = yield* eventually(
            Effect.zipRight(Stream.runDrain(ProjectionDaemon.rebuild(Board)), Session.run(Session.loadDocument(Board, board))),
            Option.isSome
          )
          assert.deepStrictEqual(doc, Option.some([kept]))
          // The subscription, run by a daemon, delivers the kept stream's event only:
          // once a marker written after the archive is delivered, the archived stream's never were.
          const marker = newId("tally")
          yield* save(Session.append(Tally, marker, [new Tallied({ board: newId("board") })]))
          delivered.length = 0
          yield* Effect.scoped(Effect.gen(function*() {
            yield* Layer.build(ProjectionDaemon.layer({ pollInterval: "20 millis" }))
            yield* eventually(Effect.sync(() => delivered.includes(marker)), (done) => done)
          }))
          assert.include(delivered, kept)
          assert.notInclude(delivered, gone)
        }))
    }
  )
}
