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
import * as Schema from "effect/Schema"
import { Aggregate, EventStore, ProjectionDaemon, Projection, Session, Subscription } from "effect-chronicle"
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
const histogramCount = (metric: typeof EventStore.metrics.saveDuration, tags: Record<string, string>) =>
  Effect.map(Metric.value(Object.entries(tags).reduce((m, [k, v]) => Metric.tagged(m, k, v), metric)), (s) => s.count)
const statements = (spans: ReadonlyArray<Recorded>) => spans.filter((s) => s.name === "sql.execute")
const statementsUnder = (spans: ReadonlyArray<Recorded>, parent: Recorded) => statements(spans).filter((s) => parentOf(s) === parent)
const statementNames = (spans: ReadonlyArray<Recorded>) => spans.map((s) => s.attributes.get("chronicle.statement"))
const saves = EventStore.metrics.saves
const appended = EventStore.metrics.eventsAppended
const retries = EventStore.metrics.commandRetries
const OrderAsync = Projection.snapshot(Order, "Async")
// The same stream folded live: fetched by reading its events (what read-combining combines).
const LiveOrder = Aggregate.make({ name: "LiveOrder", events: Order.events, initial: Order.initial, evolve: Order.evolve })
const delivered: Array<string> = []
const Mailer = Subscription.make({
  name: "tracing-mailer",
  events: Schema.Union(OrderCreated, ItemReady),
  handle: (envelope) => Effect.sync(() => void delivered.push(envelope.streamId))
})

export const tracing = (store: StoreUnderTest) =>
  layer(store.layer([OrderAsync, Mailer]), { excludeTestServices: true })(`tracing and metrics: ${store.name}`, (it) => {
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
        if (store.name === "postgres") {
          // Each operation holds the statements it ran: PostgreSQL's, named, without parameter values.
          // Order has an Async snapshot: the fetch reads it and the events after it in one statement.
          assert.deepStrictEqual(statementNames(statementsUnder(spans, fetch)), ["snapshot"])
          assert.match(String(statementNames(statementsUnder(spans, save))[0]), /^save_new/)
          assert.deepStrictEqual(statementNames(statementsUnder(spans, read)), ["read_all"])
          for (const statement of statements(spans)) {
            assert.strictEqual(statement.attributes.get("db.system.name"), "postgresql")
            // What @effect/sql-pg puts on its own statement spans (read from its internals: this fails if they move).
            assert.isString(statement.attributes.get("db.namespace"))
            assert.isNotEmpty(statement.attributes.get("db.namespace"))
            assert.strictEqual(statement.kind, "client")
            assert.isString(statement.attributes.get("chronicle.statement"))
            assert.strictEqual(statement.status._tag, "Ended")
            for (const value of statement.attributes.values()) assert.notInclude(String(value), id)
          }
        } else {
          // The in-memory store runs no statements.
          assert.deepStrictEqual(statements(spans), [])
        }
      }))

    it.effect("save and fetch durations: one observation per operation, tagged by aggregate and outcome", () =>
      Effect.gen(function*() {
        const id = newId("order")
        const savedBefore = yield* histogramCount(EventStore.metrics.saveDuration, { aggregate: "Order", outcome: "ok" })
        const fetchedBefore = yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "ok" })
        const conflictsBefore = yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "conflict" })
        const lockedBefore = yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "locked" })
        const saveConflictsBefore = yield* histogramCount(EventStore.metrics.saveDuration, { aggregate: "Order", outcome: "conflict" })
        // Two fetches (one for writing, one latest after a save: from the identity map) and one save.
        yield* Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForWriting(Order, id)
          yield* stream.appendOne(created("a"))
          yield* Session.saveChanges
          yield* Session.fetchLatest(Order, id)
        }))
        // A fetch at a stale expected version: a conflict.
        yield* Effect.flip(Session.run(Session.fetchForWriting(Order, id, { expectedVersion: 0 })))
        // A save that loses a race: a save conflict (its fetch was ok).
        yield* Effect.flip(Session.run(Effect.gen(function*() {
          const stream = yield* Session.fetchForWriting(Order, id)
          yield* Session.run(Effect.zipRight(Session.append(Order, id, [new ItemReady({ name: "a" })]), Session.saveChanges))
          yield* stream.appendOne(new ItemReady({ name: "a" }))
          yield* Session.saveChanges
        })))
        // A lock not had in time.
        yield* Session.run(Effect.gen(function*() {
          yield* Session.fetchForExclusiveWriting(Order, id)
          yield* Effect.flip(Session.run(Session.fetchForExclusiveWriting(Order, id, { timeout: "50 millis" })))
        }))
        // The saves: the first, the race's winner; the exclusive session's empty save does not run (no saveChanges).
        assert.strictEqual((yield* histogramCount(EventStore.metrics.saveDuration, { aggregate: "Order", outcome: "ok" })) - savedBefore, 2)
        assert.strictEqual((yield* histogramCount(EventStore.metrics.saveDuration, { aggregate: "Order", outcome: "conflict" })) - saveConflictsBefore, 1)
        // The fetches: two in the first session, one in the race, one exclusive that got its lock.
        assert.strictEqual((yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "ok" })) - fetchedBefore, 4)
        assert.strictEqual((yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "conflict" })) - conflictsBefore, 1)
        assert.strictEqual((yield* histogramCount(EventStore.metrics.fetchDuration, { aggregate: "Order", outcome: "locked" })) - lockedBefore, 1)
        const locked = yield* Metric.value(EventStore.metrics.fetchDuration.pipe(Metric.tagged("aggregate", "Order"), Metric.tagged("outcome", "locked")))
        // The time-out's wait is in its duration (50 ms, in milliseconds).
        assert.isAtLeast(locked.max, 45)
      }))

    it.effect("concurrent saves and fetches: combined ones are marked and linked to the shared statement's span", () =>
      Effect.gen(function*() {
        const { spans, traced } = recording()
        const ids = Array.from({ length: 40 }, () => newId("order"))
        yield* traced(Effect.forEach(ids, (id) =>
          Session.run(Effect.zipRight(Session.append(Order, id, [created("a")]), Session.saveChanges)), { concurrency: "unbounded" }))
        yield* traced(Effect.forEach(ids, (id) => Session.run(Session.fetchForWriting(LiveOrder, id)), { concurrency: "unbounded" }))
        const saveSpans = ours(spans).filter((s) => s.name === "chronicle.saveChanges")
        const fetchSpans = ours(spans).filter((s) => s.name === "chronicle.fetchForWriting")
        assert.strictEqual(saveSpans.length, 40)
        assert.strictEqual(fetchSpans.length, 40)
        for (const s of [...saveSpans, ...fetchSpans]) assert.strictEqual(failedWith(s), undefined)
        const combined = (of: ReadonlyArray<Recorded>) => of.filter((s) => s.attributes.get("chronicle.combined") === true)
        if (store.name === "memory") {
          assert.deepStrictEqual(combined([...saveSpans, ...fetchSpans]), [])
          return
        }
        for (const [operations, statement] of [[saveSpans, /^commit_each$/], [fetchSpans, /^read_many(_fold)?$/]] as const) {
          const marked = combined(operations)
          assert.isAbove(marked.length, 1, `combined ${statement}`)
          for (const waiter of marked) {
            // Its link leads to the statement that served it, which links back and says how many it served.
            const links = waiter.links.filter((l) => (l.span as Recorded).name === "sql.execute")
            assert.isAtLeast(links.length, 1)
            const shared = links[0].span as Recorded
            assert.match(String(shared.attributes.get("chronicle.statement")), statement)
            assert.strictEqual(shared.attributes.get("db.system.name"), "postgresql")
            assert.strictEqual(shared.attributes.get("chronicle.combined"), waiter.attributes.get("chronicle.combined_with"))
            assert.isAbove(Number(shared.attributes.get("chronicle.combined")), 1)
            assert.isTrue(shared.links.some((l) => l.span === waiter))
            // A statement shared by several is no one operation's child.
            assert.strictEqual(parentOf(shared), undefined)
          }
          // Those that went alone hold their own statement.
          for (const alone of operations.filter((s) => s.attributes.get("chronicle.combined") === undefined)) {
            assert.strictEqual(statementsUnder(spans, alone).length, 1)
          }
        }
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
        if (store.name === "postgres") {
          // The lock statement that timed out ends failed, with PostgreSQL's SQLSTATE.
          const run = statementsUnder(spans, span)
          assert.deepStrictEqual(statementNames(run).slice(0, 2), ["begin_lock_timeout", "lock"])
          assert.strictEqual(run[1].attributes.get("db.response.status_code"), "55P03")
          assert.strictEqual(failedWith(run[1]), "SqlError")
        }
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
        if (store.name === "postgres") {
          // Every statement, ours and those run through @effect/sql (the conflict's version look-up), is named and nested.
          const failedSave = ours(spans).find((s) => s.name === "chronicle.saveChanges" && failedWith(s) === "ConcurrencyError")!
          assert.deepStrictEqual(statementNames(statementsUnder(spans, failedSave)).map((n) => String(n).replace(/_.*/, "")), ["save", "versions"])
          for (const statement of statements(spans)) assert.isString(statement.attributes.get("chronicle.statement"))
        }
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
        // One delivery span per event the subscription took, with its stream and version.
        const deliveries = ours(spans).filter((s) =>
          s.name === "chronicle.subscription.handle" && s.attributes.get("chronicle.stream_id") === id
        )
        assert.deepStrictEqual(deliveries.map((d) => d.attributes.get("chronicle.version")), [1, 2])
        for (const d of deliveries) {
          assert.strictEqual(d.attributes.get("chronicle.subscription"), "tracing-mailer")
          assert.strictEqual(d.attributes.get("chronicle.events"), 1)
          assert.strictEqual(failedWith(d), undefined)
        }
        assert.includeMembers(delivered, [id, id])
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
