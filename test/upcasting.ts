/**
 * Upcasting, on both stores: events stored by an older schema read back in
 * the new shape through every read (fetches, folds, typed reads, snapshots,
 * multi-stream projections, subscriptions). Two evolutions: a field added with
 * a default and a field renamed (Schema transformations in the event union),
 * and an event type renamed (`eventTypeAliases`).
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Aggregate, Projection, ProjectionDaemon, Session, Subscription } from "effect-chronicle"
import { newId, type StoreUnderTest } from "./support.js"

// Version 1, as the events were first stored.
class OpenedV1 extends Schema.TaggedClass<OpenedV1>()("TicketOpened", { title: Schema.String }) {}
class AssignedV1 extends Schema.TaggedClass<AssignedV1>()("TicketAssigned", { who: Schema.String }) {}
class CommentedV1 extends Schema.TaggedClass<CommentedV1>()("TicketCommented", { text: Schema.String }) {}
const TicketV1 = Aggregate.make({
  name: "Ticket",
  events: Schema.Union(OpenedV1, AssignedV1, CommentedV1),
  initial: 0,
  evolve: (n) => n + 1
})

// Version 2: `priority` added (old events read with the default), `who`
// renamed `assignee` (old payloads transformed), `TicketCommented` renamed `TicketNoted`.
class Opened extends Schema.TaggedClass<Opened>()("TicketOpened", {
  title: Schema.String,
  priority: Schema.optionalWith(Schema.Number, { default: () => 3 })
}) {}
class Assigned extends Schema.TaggedClass<Assigned>()("TicketAssigned", { assignee: Schema.String }) {}
const AssignedFromV1 = Schema.transform(
  Schema.Struct({ _tag: Schema.Literal("TicketAssigned"), who: Schema.String }),
  Schema.typeSchema(Assigned),
  { strict: true, decode: ({ who }) => new Assigned({ assignee: who }), encode: (a) => ({ _tag: "TicketAssigned" as const, who: a.assignee }) }
)
class Noted extends Schema.TaggedClass<Noted>()("TicketNoted", { text: Schema.String }) {}
// The current class first: new events encode through it, old payloads fall through to the transformation.
const TicketEvent = Schema.Union(Opened, Assigned, AssignedFromV1, Noted)
const TicketState = Schema.Struct({
  title: Schema.String,
  priority: Schema.Number,
  assignee: Schema.NullOr(Schema.String),
  notes: Schema.Array(Schema.String)
})
type TicketState = typeof TicketState.Type
const Ticket = Aggregate.make({
  name: "Ticket",
  events: TicketEvent,
  state: TicketState,
  initial: { title: "", priority: 0, assignee: null, notes: [] } as TicketState,
  eventTypeAliases: { TicketCommented: "TicketNoted" },
  evolve: (state, event): TicketState => {
    switch (event._tag) {
      case "TicketOpened":
        return { ...state, title: event.title, priority: event.priority }
      case "TicketAssigned":
        return { ...state, assignee: event.assignee }
      case "TicketNoted":
        return { ...state, notes: [...state.notes, event.text] }
    }
  }
})
const expected = (notes: ReadonlyArray<string>): TicketState => ({ title: "t", priority: 3, assignee: "ann", notes })

// A multi-stream view and a subscription over the new events, old names included.
const Notes = Projection.multiStream({
  name: "TicketNotes",
  events: Noted,
  state: Schema.Array(Schema.String),
  initial: [] as ReadonlyArray<string>,
  key: (envelope) => envelope.streamId,
  evolve: (state, event, envelope) => [...state, `${envelope.type}:${event.text}`],
  lifecycle: "Async",
  eventTypeAliases: { TicketCommented: "TicketNoted" }
})
const seen: Array<string> = []
const NoteReactor = Subscription.make({
  name: "TicketNoteReactor",
  events: Noted,
  eventTypeAliases: { TicketCommented: "TicketNoted" },
  handle: (envelope) => Effect.sync(() => void seen.push(`${envelope.streamId}:${envelope.type}:${envelope.data.text}`))
})

const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))
const writeV1 = (id: string) =>
  save(Session.append(TicketV1, id, [new OpenedV1({ title: "t" }), new AssignedV1({ who: "ann" }), new CommentedV1({ text: "old" })]))
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean) =>
  Effect.flatMap(effect, (a) => done(a) ? Effect.succeed(a) : Effect.fail("not yet" as const)).pipe(
    Effect.retry(Schedule.spaced("20 millis")),
    Effect.timeout("20 seconds")
  )

export const upcasting = (store: StoreUnderTest, lifecycle: "Live" | "Inline" | "Async") => {
  const snapshot = Projection.snapshot(Ticket, lifecycle)
  const registrations = lifecycle === "Live" ? [Notes, NoteReactor] : [snapshot, Notes, NoteReactor]
  return layer(store.layer(registrations), { excludeTestServices: true })(`upcasting: ${store.name}, ${lifecycle}`, (it) => {
    it.effect("old events read back in the new shape through the fetches, folds and typed reads", () =>
      Effect.gen(function*() {
        const id = newId("ticket")
        yield* writeV1(id)
        const stream = yield* Session.run(Session.fetchForWriting(Ticket, id))
        assert.strictEqual(stream.version, 3)
        assert.deepStrictEqual(stream.aggregate, Option.some(expected(["old"])))
        assert.deepStrictEqual(yield* Session.run(Session.fetchLatest(Ticket, id)), Option.some(expected(["old"])))
        assert.deepStrictEqual(yield* Session.run(Session.aggregateStream(Ticket, id, { version: 2 })), Option.some(expected([])))
        const exclusive = yield* Session.run(Session.fetchForExclusiveWriting(Ticket, id))
        assert.deepStrictEqual(exclusive.aggregate, Option.some(expected(["old"])))
        const typed = yield* Session.run(Session.readStream(Ticket, id))
        assert.deepStrictEqual(typed.map((e) => [e.type, e.data._tag]), [
          ["TicketOpened", "TicketOpened"],
          ["TicketAssigned", "TicketAssigned"],
          ["TicketNoted", "TicketNoted"]
        ])
        assert.instanceOf(typed[0].data, Opened)
        assert.deepStrictEqual(typed[0].data, new Opened({ title: "t", priority: 3 }))
        assert.deepStrictEqual(typed[1].data, new Assigned({ assignee: "ann" }))
        assert.deepStrictEqual(typed[2].data, new Noted({ text: "old" }))
      }))

    it.effect("new events are written under the new name and shape; old and new read together", () =>
      Effect.gen(function*() {
        const id = newId("ticket")
        yield* writeV1(id)
        yield* save(Effect.gen(function*() {
          const stream = yield* Session.fetchForWriting(Ticket, id)
          yield* stream.appendMany([new Noted({ text: "new" }), new Assigned({ assignee: "bob" })])
        }))
        const raw = yield* Session.run(Session.readStream(id))
        assert.deepStrictEqual(raw.map((e) => [e.type, e.data]), [
          ["TicketOpened", { title: "t" }],
          ["TicketAssigned", { who: "ann" }],
          ["TicketCommented", { text: "old" }],
          ["TicketNoted", { text: "new" }],
          ["TicketAssigned", { assignee: "bob" }]
        ])
        const state = { ...expected(["old", "new"]), assignee: "bob" }
        assert.deepStrictEqual(yield* Session.run(Session.fetchLatest(Ticket, id)), Option.some(state))
        assert.deepStrictEqual(yield* Session.run(Session.aggregateStream(Ticket, id)), Option.some(state))
        if (lifecycle === "Inline") {
          // The snapshot the save wrote folded the old events in their new shape.
          assert.deepStrictEqual(yield* Session.run(Session.loadDocument(snapshot, id)), Option.some(state))
        }
      }))

    it.effect("an unknown event type still fails with EventDecodeError", () =>
      Effect.gen(function*() {
        class Stray extends Schema.TaggedClass<Stray>()("TicketStray", {}) {}
        // Another stream type, so the Async snapshot of Ticket never meets it.
        const Alien = Aggregate.make({ name: "TicketAlien", events: Stray, initial: 0, evolve: (n) => n + 1 })
        const id = newId("ticket")
        yield* save(Session.append(Alien, id, [new Stray()]))
        const error = yield* Effect.flip(Session.run(Session.fetchForWriting(Ticket, id)))
        assert.deepInclude(error, { _tag: "EventDecodeError", eventType: "TicketStray", streamId: id, version: 1 })
        assert.strictEqual((yield* Effect.flip(Session.run(Session.readStream(Ticket, id))))._tag, "EventDecodeError")
      }))

    it.effect("the daemon reads old events in the new shape: Async snapshots, multi-stream views, subscriptions", () =>
      Effect.gen(function*() {
        const id = newId("ticket")
        yield* writeV1(id)
        yield* save(Session.append(Ticket, id, [new Noted({ text: "new" })]))
        const notes = yield* eventually(
          Effect.zipRight(Stream.runDrain(ProjectionDaemon.rebuild(Notes)), Session.run(Session.loadDocument(Notes, id))),
          (doc) => Option.isSome(doc) && doc.value.length === 2
        )
        // Envelopes carry the name the event was read as.
        assert.deepStrictEqual(notes, Option.some(["TicketNoted:old", "TicketNoted:new"]))
        if (lifecycle === "Async") {
          const doc = yield* eventually(
            Effect.zipRight(Stream.runDrain(ProjectionDaemon.rebuild(snapshot)), Session.run(Session.loadDocument(snapshot, id))),
            Option.isSome
          )
          assert.deepStrictEqual(doc, Option.some(expected(["old", "new"])))
        }
        seen.length = 0
        yield* Effect.scoped(Effect.zipRight(
          Layer.build(ProjectionDaemon.layer({ pollInterval: "20 millis" })),
          eventually(Effect.sync(() => seen.filter((s) => s.startsWith(`${id}:`))), (mine) => mine.length === 2)
        ))
        assert.deepStrictEqual(seen.filter((s) => s.startsWith(`${id}:`)), [`${id}:TicketNoted:old`, `${id}:TicketNoted:new`])
      }))

    it("eventTypeAliases naming no current type, or shadowing one, is refused at definition", () => {
      assert.throws(() => Aggregate.make({ ...TicketV1, eventTypeAliases: { Old: "TicketGone" } }), /TicketGone/)
      assert.throws(() => Aggregate.make({ ...TicketV1, eventTypeAliases: { TicketOpened: "TicketAssigned" } }), /current event type/)
    })
  })
}
