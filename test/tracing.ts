/**
 * Spans and metrics of the public operations, on both stores, with a
 * recording tracer: names, attributes, nesting, failure tags; and the
 * metrics moving by exactly what was done.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Tracer from "effect/Tracer"
import { EventStore, ProjectionDaemon, Projection, Session } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

class Recorded implements Tracer.Span {
  readonly _tag = "Span"
  readonly spanId = Math.random().toString(16).slice(2)
  readonly traceId: string
  readonly sampled = true
  status: Tracer.SpanStatus
  readonly attributes = new Map<string, unknown>()
  links: Array<Tracer.SpanLink>
  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    links: ReadonlyArray<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind
  ) {
    this.traceId = Option.match(parent, { onNone: () => this.spanId, onSome: (p) => p.traceId })
    this.status = { _tag: "Started", startTime }
    this.links = [...links]
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>) {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown) {
    this.attributes.set(key, value)
  }
  event() {}
  addLinks(links: ReadonlyArray<Tracer.SpanLink>) {
    this.links.push(...links)
  }
}

const recording = () => {
  const spans: Array<Recorded> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const span = new Recorded(name, parent, context, links, startTime, kind)
      spans.push(span)
      return span
    },
    context: (f) => f()
  })
  return { spans, traced: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withTracer(effect, tracer) }
}

const ours = (spans: ReadonlyArray<Recorded>) => spans.filter((s) => s.name.startsWith("chronicle."))
const parentOf = (span: Recorded) => Option.getOrUndefined(span.parent) as Recorded | undefined
const failedWith = (span: Recorded) =>
  span.status._tag === "Ended" && Exit.isFailure(span.status.exit) ? span.attributes.get("error.type") : undefined
const created = (...names: Array<string>) => new OrderCreated({ items: names.map((name) => new Item({ name, ready: false })) })
const counter = (metric: Metric.Metric.Counter<number>, tags: Record<string, string>) =>
  Effect.map(Metric.value(Object.entries(tags).reduce((m, [k, v]) => Metric.tagged(m, k, v), metric)), (s) => s.count)
const saves = EventStore.metrics.saves
const appended = EventStore.metrics.eventsAppended
const retries = EventStore.metrics.commandRetries
const OrderAsync = Projection.snapshot(Order, "Async")

export const tracing = (store: StoreUnderTest) =>
  layer(store.layer([OrderAsync]), { excludeTestServices: true })(`tracing and metrics: ${store.name}`, (it) => {
    it.effect("a plain session: one span per operation, with its attributes; events appended and a save counted", () =>
      Effect.gen(function*() {
        const { spans, traced } = recording()
        const id = newId("order")
        const okBefore = yield* counter(saves, { outcome: "ok" })
        const appendedBefore = yield* counter(appended, { aggregate: "Order" })
        yield* traced(EventStore.withTenant(
          Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(Order, id)
            yield* stream.appendMany([created("a"), new ItemReady({ name: "a" })])
            yield* Session.saveChanges
            yield* Session.fetchLatest(Order, id)
            yield* Session.readStream(Order, id)
          })),
          "tracing-tenant"
        ))
        const names = ours(spans).map((s) => s.name)
        assert.deepStrictEqual(names, ["chronicle.fetchForWriting", "chronicle.saveChanges", "chronicle.fetchLatest", "chronicle.readStream"])
        const [fetch, save, , read] = ours(spans)
        assert.strictEqual(fetch.attributes.get("chronicle.stream_id"), id)
        assert.strictEqual(fetch.attributes.get("chronicle.aggregate"), "Order")
        assert.strictEqual(fetch.attributes.get("chronicle.tenant"), "tracing-tenant")
        assert.strictEqual(fetch.attributes.get("chronicle.version"), 0)
        assert.strictEqual(save.attributes.get("chronicle.events"), 2)
        assert.strictEqual(read.attributes.get("chronicle.events"), 2)
        for (const s of ours(spans)) assert.strictEqual(s.status._tag, "Ended")
        assert.strictEqual((yield* counter(saves, { outcome: "ok" })) - okBefore, 1)
        assert.strictEqual((yield* counter(appended, { aggregate: "Order" })) - appendedBefore, 2)
      }))

    it.effect("an exclusive fetch that times out ends failed with StreamLockedError, and is counted as locked", () =>
      Effect.gen(function*() {
        const { spans, traced } = recording()
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges))
        const lockedBefore = yield* counter(saves, { outcome: "locked" })
        const error = yield* Session.run(Effect.gen(function*() {
          yield* Session.fetchForExclusiveWriting(Order, id)
          return yield* Effect.flip(traced(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "100 millis" }))))
        }))
        assert.strictEqual(error._tag, "StreamLockedError")
        const [span] = ours(spans)
        assert.strictEqual(span.name, "chronicle.fetchForExclusiveWriting")
        assert.strictEqual(failedWith(span), "StreamLockedError")
        assert.strictEqual((yield* counter(saves, { outcome: "locked" })) - lockedBefore, 1)
      }))

    it.effect("a command that conflicts once: a command span holding two attempts, each its fetch and save; one retry counted", () =>
      Effect.gen(function*() {
        const { spans, traced } = recording()
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a", "b")]), Session.saveChanges))
        const retriesBefore = yield* counter(retries, {})
        const conflictsBefore = yield* counter(saves, { outcome: "conflict" })
        let tries = 0
        yield* traced(EventStore.writeToAggregate(Order, id, (stream) =>
          Effect.gen(function*() {
            if (++tries === 1) {
              // Another writer moves the stream between this fetch and its save.
              yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "b" })]), Session.saveChanges))
            }
            yield* stream.appendOne(new ItemReady({ name: "a" }))
          }), { retry: Schedule.recurs(2) }))
        const command = ours(spans).filter((s) => s.name === "chronicle.command")
        assert.strictEqual(command.length, 1)
        const attempts = ours(spans).filter((s) => s.name === "chronicle.command.attempt")
        assert.deepStrictEqual(attempts.map((a) => a.attributes.get("chronicle.attempt")), [1, 2])
        for (const a of attempts) assert.strictEqual(parentOf(a), command[0])
        assert.strictEqual(failedWith(attempts[0]), "ConcurrencyError")
        assert.strictEqual(failedWith(attempts[1]), undefined)
        for (const a of attempts) {
          const children = ours(spans).filter((s) => parentOf(s) === a).map((s) => s.name)
          assert.includeMembers(children, ["chronicle.fetchForWriting", "chronicle.saveChanges"])
        }
        assert.strictEqual(failedWith(command[0]), undefined)
        assert.strictEqual((yield* counter(retries, {})) - retriesBefore, 1)
        assert.strictEqual((yield* counter(saves, { outcome: "conflict" })) - conflictsBefore, 1)
      }))

    it.effect("a daemon batch: a span with the projection, its first and last sequence and its event count", () =>
      Effect.gen(function*() {
        const { spans, traced } = recording()
        const id = newId("order")
        yield* Session.run(Effect.zipRight(Session.append(Order, id, [created("a"), new ItemReady({ name: "a" })]), Session.saveChanges))
        yield* traced(Effect.scoped(Effect.gen(function*() {
          const daemon = Context.get(yield* Layer.build(ProjectionDaemon.layer({ pollInterval: "50 millis" })), ProjectionDaemon.ProjectionDaemon)
          yield* daemon.waitForNonStale({ timeout: "20 seconds" })
        })))
        const batches = ours(spans).filter((s) => s.name === "chronicle.projection.batch")
        assert.isAtLeast(batches.length, 1)
        const last = batches[batches.length - 1]
        assert.strictEqual(last.attributes.get("chronicle.projection"), "Order")
        const first = Number(batches[0].attributes.get("chronicle.first_sequence"))
        const end = Number(last.attributes.get("chronicle.last_sequence"))
        assert.isAtMost(first, end)
        const total = batches.reduce((n, b) => n + Number(b.attributes.get("chronicle.events")), 0)
        assert.isAtLeast(total, 2)
      }))

    it.effect("with no tracer installed, no span is made", () =>
      Effect.gen(function*() {
        // A command's decision runs in the caller's span: no command or attempt span was opened around it.
        const id = newId("order")
        let inside = ""
        yield* Effect.withSpan(
          EventStore.writeToAggregate(Order, id, (stream) =>
            Effect.zipRight(
              Effect.map(Effect.currentSpan, (span) => void (inside = span.name)),
              stream.appendOne(created("a"))
            ), { retry: Schedule.recurs(1) }),
          "caller"
        )
        assert.strictEqual(inside, "caller")
        // With a tracer, the same decision runs in its attempt's span.
        const { traced } = recording()
        yield* traced(Effect.withSpan(
          EventStore.writeToAggregate(Order, id, (stream) =>
            Effect.zipRight(Effect.map(Effect.currentSpan, (span) => void (inside = span.name)), stream.appendOne(new ItemReady({ name: "a" })))),
          "caller"
        ))
        assert.strictEqual(inside, "chronicle.command.attempt")
      }))
  })
