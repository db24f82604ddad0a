/**
 * Review of envelope-free folds: an evolve whose `length` is one or two but
 * that still takes a third parameter (a default on it, or a rest after the
 * event) gets each event's envelope; and a fold meets an event that does not
 * decode before it runs evolve, as with envelopes. Both stores.
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, type EventEnvelope as Envelopes, Session } from "effect-chronicle"
type EventEnvelope<E> = Envelopes.EventEnvelope<E>
import { appendForeignTick, memoryStore, newId, pgStore } from "./support.js"

class Ticked extends Schema.TaggedClass<Ticked>()("Ticked", { by: Schema.Number }) {}
type Seen = { readonly total: number; readonly versions: ReadonlyArray<number> }
const none: Seen = { total: 0, versions: [] }

const DefaultedEnvelope = Aggregate.make({
  name: "Tick",
  events: Ticked,
  initial: none,
  evolve: (state: Seen, event: Ticked, envelope: EventEnvelope<Ticked> | undefined = undefined): Seen => ({
    total: state.total + event.by,
    versions: [...state.versions, envelope?.version ?? -1]
  })
})
const RestEnvelope = Aggregate.make({
  name: "Tick",
  events: Ticked,
  initial: none,
  evolve: (state: Seen, event: Ticked, ...rest: [EventEnvelope<Ticked>]): Seen => ({
    total: state.total + event.by,
    versions: [...state.versions, rest[0]?.version ?? -1]
  })
})
const Throwing = Aggregate.make({
  name: "Tick",
  events: Ticked,
  initial: 0,
  evolve: (n: number, event: Ticked) => {
    if (event.by === 1) throw new Error("evolve met the first event")
    return n + event.by
  }
})

for (const store of [memoryStore, pgStore()]) {
  layer(store.layer([]), { excludeTestServices: true })(`review folds: ${store.name}`, (it) => {
    it.effect("a default on the envelope parameter or a rest after the event: evolve gets envelopes", () =>
      Effect.gen(function*() {
        const id = newId("tick")
        yield* Session.run(Effect.zipRight(Session.append(DefaultedEnvelope, id, [1, 2].map((by) => new Ticked({ by }))), Session.saveChanges))
        for (const aggregate of [DefaultedEnvelope, RestEnvelope]) {
          const fetched = yield* Session.run(Session.fetchForWriting(aggregate, id))
          assert.deepStrictEqual(fetched.aggregate, Option.some({ total: 3, versions: [1, 2] }))
        }
      }))

    it.effect("an event that does not decode fails the fold before evolve runs, as with envelopes", () =>
      Effect.gen(function*() {
        const id = newId("tick")
        yield* Session.run(Effect.zipRight(Session.append(DefaultedEnvelope, id, [new Ticked({ by: 1 })]), Session.saveChanges))
        yield* appendForeignTick(id)
        const exit = yield* Effect.exit(Session.run(Session.fetchForWriting(Throwing, id)))
        assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Fail", String(exit))
        if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
          assert.deepInclude(exit.cause.error, { _tag: "EventDecodeError", streamId: id, version: 2, eventType: "Other" })
        }
      }))
  })
}
