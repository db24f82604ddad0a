/**
 * Folding a stream with and without envelopes: an `evolve` of two parameters
 * is folded without them (and read lean on PostgreSQL); one that declares a
 * third, a rest parameter or a default on its first still gets each event's
 * envelope, with its real version, sequence and timestamp. Both stores.
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, type EventEnvelope as Envelopes, Session } from "effect-chronicle"
type EventEnvelope<E> = Envelopes.EventEnvelope<E>
import { appendForeignTick, memoryStore, newId, pgStore } from "./support.js"

class Ticked extends Schema.TaggedClass<Ticked>()("Ticked", { by: Schema.Number }) {}
type Seen = { readonly total: number; readonly versions: ReadonlyArray<number>; readonly sequences: ReadonlyArray<number> }
const none: Seen = { total: 0, versions: [], sequences: [] }
const withEnvelope = (state: Seen, event: Ticked, envelope: EventEnvelope<Ticked>): Seen => ({
  total: state.total + event.by,
  versions: [...state.versions, envelope.version],
  sequences: [...state.sequences, envelope.sequence]
})

const Plain = Aggregate.make({ name: "Tick", events: Ticked, initial: none, evolve: (state, event) => ({ ...state, total: state.total + event.by }) })
const Enveloped = Aggregate.make({ name: "Tick", events: Ticked, initial: none, evolve: withEnvelope })
const Rest = Aggregate.make({
  name: "Tick",
  events: Ticked,
  initial: none,
  evolve: (...args: [Seen, Ticked, EventEnvelope<Ticked>]) => withEnvelope(...args)
})
const Defaulted = Aggregate.make({
  name: "Tick",
  events: Ticked,
  initial: none,
  evolve: (state: Seen = none, event: Ticked, envelope: EventEnvelope<Ticked>) => withEnvelope(state, event, envelope)
})

for (const store of [memoryStore, pgStore()]) {
  layer(store.layer([]), { excludeTestServices: true })(`folds: ${store.name}`, (it) => {
    it.effect("an evolve of two parameters folds the events; those that may read envelopes get real ones", () =>
      Effect.gen(function*() {
        const id = newId("tick")
        yield* Session.run(Effect.zipRight(Session.append(Plain, id, [1, 2, 3].map((by) => new Ticked({ by }))), Session.saveChanges))
        const read = yield* Session.run(Session.readStream(id))
        const sequences = read.map((e) => e.sequence)
        const plain = yield* Session.run(Session.fetchForWriting(Plain, id))
        assert.strictEqual(plain.version, 3)
        assert.deepStrictEqual(Option.map(plain.aggregate, (s) => s.total), Option.some(6))
        for (const aggregate of [Enveloped, Rest, Defaulted]) {
          const fetched = yield* Session.run(Session.fetchForWriting(aggregate, id))
          assert.strictEqual(fetched.version, 3)
          assert.deepStrictEqual(fetched.aggregate, Option.some({ total: 6, versions: [1, 2, 3], sequences }))
        }
        // An unknown type still fails the fold with its stream, version and type.
        yield* appendForeignTick(id)
        const error = yield* Effect.flip(Session.run(Session.fetchForWriting(Plain, id)))
        assert.deepInclude(error, { _tag: "EventDecodeError", streamId: id, version: 4, eventType: "Other" })
      }))

    it.effect("after a save the identity map holds the saved events folded on: without envelopes for two parameters, with real ones else", () =>
      Effect.gen(function*() {
        for (const aggregate of [Plain, Enveloped, Rest]) {
          const id = newId("tick")
          yield* Session.run(Effect.zipRight(Session.append(aggregate, id, [new Ticked({ by: 1 })]), Session.saveChanges))
          const [saved, latest] = yield* Session.run(Effect.gen(function*() {
            const stream = yield* Session.fetchForWriting(aggregate, id)
            yield* stream.appendMany([2, 3].map((by) => new Ticked({ by })))
            const saved = yield* Session.saveChanges
            return [saved, yield* Session.fetchLatest(aggregate, id)] as const
          }))
          const read = yield* Session.run(Session.readStream(id))
          assert.deepStrictEqual(saved.streams[0].sequences, read.slice(1).map((e) => e.sequence))
          assert.deepStrictEqual(
            latest,
            Option.some(aggregate === Plain
              ? { ...none, total: 6 }
              : { total: 6, versions: [1, 2, 3], sequences: read.map((e) => e.sequence) })
          )
        }
      }))
  })
}
