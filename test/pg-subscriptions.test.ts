/**
 * Subscriptions and readers on PostgreSQL against the pool and the shared
 * LISTEN connection: waiting workers hold no pool connection, and a live
 * reader that ends does not deafen the others in the process.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Aggregate, EventStore, ProjectionDaemon, Session, Subscription } from "effect-chronicle"
import { newId, pgStore } from "./support.js"

class Beeped extends Schema.TaggedClass<Beeped>()("PoolBeeped", { n: Schema.Number }) {}
const Beeper = Aggregate.make({ name: "PoolBeeper", events: Beeped, initial: 0, evolve: (n) => n + 1 })

const delivered = new Map<string, Array<{ readonly streamId: string; readonly at: number }>>()
const subscriber = (name: string) =>
  Subscription.make({
    name,
    events: Beeped,
    handle: (envelope) =>
      Effect.sync(() => {
        const list = delivered.get(name) ?? []
        list.push({ streamId: envelope.streamId, at: Date.now() })
        delivered.set(name, list)
      })
  })
const names = ["pool-a", "pool-b", "pool-c", "pool-d"]
const beep = (id: string) => Session.run(Effect.zipRight(Session.append(Beeper, id, [new Beeped({ n: 1 })]), Session.saveChanges))
const gotAll = (id: string) =>
  Effect.repeat(Effect.sync(() => names.every((n) => (delivered.get(n) ?? []).some((d) => d.streamId === id))), {
    until: (ok) => ok,
    schedule: Schedule.spaced("10 millis")
  })
const startDaemon = (options?: ProjectionDaemon.Options) =>
  Effect.map(Layer.build(ProjectionDaemon.layer(options)), (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon))

// A pool of 3, two subscriptions and two daemons: each leader holds a connection while it leads (its
// advisory lock lives on it); the other daemon's workers wait holding none, so saves still get one.
const pair = names.slice(0, 2)
layer(pgStore({ maxConnections: 3 }).layer(pair.map(subscriber)), { excludeTestServices: true })(
  "subscriptions on a small pool",
  (it) => {
    it.scoped("waiting workers hold no pool connection: saves go on and both subscriptions deliver", () =>
      Effect.gen(function*() {
        yield* startDaemon({ pollInterval: "100 millis" })
        yield* startDaemon({ pollInterval: "100 millis" })
        for (let i = 0; i < 3; i++) {
          const id = newId("beep")
          yield* beep(id).pipe(Effect.timeout("10 seconds"))
          yield* Effect.repeat(Effect.sync(() => pair.every((n) => (delivered.get(n) ?? []).some((d) => d.streamId === id))), {
            until: (ok) => ok,
            schedule: Schedule.spaced("10 millis")
          }).pipe(Effect.timeout("30 seconds"))
        }
      }), { timeout: 60_000 })
  }
)

layer(pgStore().layer(names.map(subscriber)), { excludeTestServices: true })("one LISTEN per store", (it) => {
  it.scoped("a live readAll that ends leaves the daemon's wake-ups working", () =>
    Effect.gen(function*() {
      // Polling every 5 seconds: a delivery within 2 seconds was woken by a notification.
      yield* startDaemon({ pollInterval: "5 seconds" })
      const first = newId("beep")
      yield* beep(first)
      yield* gotAll(first).pipe(Effect.timeout("20 seconds"))
      // A live reader comes and goes.
      const second = newId("beep")
      yield* Effect.fork(Effect.zipRight(Effect.sleep("100 millis"), beep(second)))
      yield* EventStore.readAll({ live: true, types: ["PoolBeeped"], after: undefined }).pipe(
        Stream.filter((e) => e.streamId === second),
        Stream.take(1),
        Stream.runDrain,
        Effect.timeout("20 seconds")
      )
      yield* gotAll(second).pipe(Effect.timeout("20 seconds"))
      yield* Effect.sleep("200 millis")
      const third = newId("beep")
      const at = Date.now()
      yield* beep(third)
      yield* gotAll(third).pipe(Effect.timeout("20 seconds"))
      const latest = Math.max(...names.map((n) => delivered.get(n)!.find((d) => d.streamId === third)!.at))
      assert.isBelow(latest - at, 2_000)
    }), { timeout: 60_000 })
})
