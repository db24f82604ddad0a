/**
 * The hot path's one-step primitives (src/internal/fiber.ts), which stand in
 * for `Effect.provideService`, `Effect.ensuring` and a tag read: the same
 * outcomes, the context as it was after the run whatever its exit, and the
 * release run once on success, failure, defect and interruption. The first
 * test fails when an Effect upgrade moves the fiber method they rely on.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, EventStoreMemory, Projections, Session } from "effect-chronicle"
import * as Lean from "../src/internal/fiber.js"

class Counter extends Context.Tag("test/Counter")<Counter, { readonly n: number }>() {}
class Other extends Context.Tag("test/Other")<Other, string>() {}

// A service whose release is recorded, as a session's close is.
const scoped = <A, E, R>(self: Effect.Effect<A, E, R>, released: Array<string>, release?: Effect.Effect<void>) =>
  Lean.provideScoped(self, Counter, () => ({ service: { n: 1 }, handle: "h" }), (handle) =>
    Effect.sync(() => void released.push(handle)).pipe(Effect.zipRight(release ?? Effect.void)))

describe("lean fiber steps", () => {
  it.effect("the fiber sets a FiberRef as FiberRef.set does (the method Effect 3 has but does not list)", () =>
    Effect.gen(function*() {
      const ref = FiberRef.unsafeMake(0)
      yield* Effect.withFiberRuntime((fiber) => {
        Lean.unsafeSet(fiber, ref, 7)
        return Effect.void
      })
      assert.strictEqual(yield* FiberRef.get(ref), 7)
    }))

  it.effect("withService reads the service in one step; a missing one is a defect, as with the tag", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Effect.provideService(Lean.withService(Other, (s) => Effect.succeed(s.length)), Other, "abc"), 3)
      const missing = yield* Effect.exit(Lean.withService(Other, Effect.succeed) as Effect.Effect<string>)
      assert.isTrue(Exit.isFailure(missing) && Cause.isDie(missing.cause))
    }))

  it.effect("provideScoped: the service inside, forks included; the context as it was after; released once", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const inside = yield* scoped(
        Effect.gen(function*() {
          const here = (yield* Counter).n
          const forked = yield* Effect.fork(Effect.map(Counter, (c) => c.n))
          return [here, yield* Fiber.join(forked)]
        }),
        released
      ).pipe(Effect.provideService(Other, "outer"))
      assert.deepStrictEqual(inside, [1, 1])
      assert.deepStrictEqual(released, ["h"])
      assert.isTrue(Option.isNone(yield* Effect.serviceOption(Counter)))
    }))

  it.effect("provideScoped: a failure, a defect and an interruption each release once and keep their cause", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const failed = yield* Effect.exit(scoped(Effect.fail("no"), released))
      assert.deepStrictEqual(failed, Exit.fail("no"))
      const died = yield* Effect.exit(scoped(Effect.die("boom"), released))
      assert.isTrue(Exit.isFailure(died) && Cause.isDie(died.cause))
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(scoped(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never), released))
      yield* Deferred.await(started)
      const interrupted = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(interrupted))
      assert.deepStrictEqual(released, ["h", "h", "h"])
      assert.isTrue(Option.isNone(yield* Effect.serviceOption(Counter)))
    }))

  it.effect("provideScoped: a release that fails after a failure keeps both causes, in order", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(scoped(Effect.fail("first"), [], Effect.die("second")))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        assert.deepStrictEqual(Cause.failures(exit.cause).pipe((c) => Array.from(c)), ["first"])
        assert.isTrue(Cause.isDie(exit.cause))
      }
    }))
})

class Ticked extends Schema.TaggedClass<Ticked>()("Ticked", { by: Schema.Number }) {}
const Tick = Aggregate.make({ name: "Tick", events: Ticked, initial: 0, evolve: (n: number, e: Ticked) => n + e.by })

describe("Session.run over the lean steps", () => {
  const store = EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer([])))

  it.live("each run is a session of its own, gone from the context after it, whatever its exit", () =>
    Effect.gen(function*() {
      const sessions: Array<Session.SessionShape> = []
      yield* Session.run(Effect.zipRight(Effect.map(Session.Session, (s) => void sessions.push(s)), Effect.void))
      yield* Effect.exit(Session.run(Effect.zipRight(Effect.map(Session.Session, (s) => void sessions.push(s)), Effect.fail("x"))))
      assert.strictEqual(sessions.length, 2)
      assert.notStrictEqual(sessions[0], sessions[1])
      assert.isTrue(Option.isNone(yield* Effect.serviceOption(Session.Session)))
    }).pipe(Effect.provide(store)))

  it.live("an exclusive fetch left unsaved is ended with the run: the next exclusive fetch of the stream gets the lock at once", () =>
    Effect.gen(function*() {
      const id = `lean-${Math.random().toString(36).slice(2)}`
      yield* Session.run(Effect.zipRight(Session.append(Tick, id, [new Ticked({ by: 1 })]), Session.saveChanges))
      yield* Session.run(Session.fetchForExclusiveWriting(Tick, id))
      const again = yield* Session.run(Session.fetchForExclusiveWriting(Tick, id, { timeout: "10 millis" }))
      assert.strictEqual(again.version, 1)
      const interrupted = yield* Effect.fork(Session.run(Effect.zipRight(Session.fetchForExclusiveWriting(Tick, id), Effect.never)))
      yield* Effect.sleep("20 millis")
      yield* Fiber.interrupt(interrupted)
      const after = yield* Session.run(Session.fetchForExclusiveWriting(Tick, id, { timeout: "10 millis" }))
      assert.strictEqual(after.version, 1)
    }).pipe(Effect.provide(store)))
})
