import { assert, layer, it as plainIt } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Aggregate, EventStore, EventStoreMemory, ProjectionDaemon, Projections, Session, Subscription } from "effect-chronicle"
import { memoryStore, newId, pgStore, type StoreUnderTest } from "./support.js"

class RvA extends Schema.TaggedClass<RvA>()("RvA", { mark: Schema.String }) {}
class RvB extends Schema.TaggedClass<RvB>()("RvB", { mark: Schema.String }) {}
const Rv = Aggregate.make({ name: "Rv", events: Schema.Union(RvA, RvB), state: Schema.Number, initial: 0, evolve: (n) => n + 1 })

const seen = new Map<string, Array<string>>()
const rec = (sub: string, what: string) => { const l = seen.get(sub) ?? []; l.push(what); seen.set(sub, l) }
const seenOf = (sub: string) => seen.get(sub) ?? []
class Boom extends Schema.TaggedError<Boom>()("Boom", { m: Schema.String }) {}
const quick = Schedule.intersect(Schedule.spaced("5 millis"), Schedule.recurs(2))

const SubThrow = Subscription.make({ name: "rv-throw", events: Schema.Union(RvA, RvB), retry: quick,
  handle: (e) => { if (e.data.mark === "throw") throw new Error("sync throw"); return Effect.sync(() => rec("rv-throw", e.data.mark)) } })
const SubInt = Subscription.make({ name: "rv-int", events: Schema.Union(RvA, RvB), retry: quick,
  handle: (e) => e.data.mark === "interrupt" ? Effect.interrupt : Effect.sync(() => rec("rv-int", e.data.mark)) })
const SubStop = Subscription.make({ name: "rv-stop", events: Schema.Union(RvA, RvB), retry: quick, onFailure: "stop",
  handle: (e) => e.data.mark === "poison-stop" ? new Boom({ m: "stop" }) : Effect.sync(() => rec("rv-stop", e.data.mark)) })
const SubDL = Subscription.make({ name: "rv-dl", events: Schema.Union(RvA, RvB), retry: quick,
  handle: (e) => e.data.mark === "poison-dl" ? new Boom({ m: "dl" }) : Effect.sync(() => rec("rv-dl", e.data.mark)) })
const SubLag = Subscription.make({ name: "rv-lag", events: RvA, retry: quick, handle: (e) => Effect.sync(() => rec("rv-lag", e.data.mark)) })
const regs = [SubThrow, SubInt, SubStop, SubDL, SubLag] as const

const put = (id: string, ...events: Array<RvA | RvB>) => Session.run(Effect.zipRight(Session.append(Rv, id, events), Session.saveChanges))
const startDaemon = Effect.map(Layer.build(ProjectionDaemon.layer({ pollInterval: "100 millis" })), (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon))
const eventually = (check: () => boolean, t = "5 seconds") =>
  Effect.repeat(Effect.sync(check), { until: (ok) => ok, schedule: Schedule.spaced("10 millis") }).pipe(Effect.timeout(t), Effect.option)

const suite = (store: StoreUnderTest) =>
  layer(store.layer(regs), { excludeTestServices: true })(`review ${store.name}`, (it) => {
    it.scoped("R1 sync throw in handle", () => Effect.gen(function*() {
      const daemon = yield* startDaemon
      const id = newId("t")
      yield* put(id, new RvA({ mark: "throw" }))
      yield* put(id, new RvA({ mark: "after-throw" }))
      yield* eventually(() => seenOf("rv-throw").includes("after-throw"), "3 seconds")
      const st = (yield* daemon.status).find((s) => s.name === "rv-throw")!
      const dl = yield* Subscription.deadLetters("rv-throw")
      console.log("R1", store.name, { delivered: seenOf("rv-throw"), deadLetters: dl.length, error: st.error, leader: st.leader })
    }))
    it.scoped("R2 Effect.interrupt in handle", () => Effect.gen(function*() {
      const daemon = yield* startDaemon
      const id = newId("i")
      yield* put(id, new RvA({ mark: "interrupt" }))
      yield* put(id, new RvA({ mark: "after-int" }))
      yield* eventually(() => seenOf("rv-int").includes("after-int"), "3 seconds")
      const st = (yield* daemon.status).find((s) => s.name === "rv-int")!
      const dl = yield* Subscription.deadLetters("rv-int")
      console.log("R2", store.name, { delivered: seenOf("rv-int").includes("after-int"), deadLetters: dl.length, error: st.error, leader: st.leader })
    }))
    it.scoped("R3 lag of a filtered subscription", () => Effect.gen(function*() {
      const daemon = yield* startDaemon
      const id = newId("l")
      yield* put(id, new RvA({ mark: "lag-a" }))
      yield* put(id, new RvB({ mark: "b1" }), new RvB({ mark: "b2" }), new RvB({ mark: "b3" }))
      yield* eventually(() => seenOf("rv-lag").includes("lag-a"))
      yield* eventually(() => seenOf("rv-dl").includes("b3"))
      yield* Effect.sleep("500 millis")
      const st = (yield* daemon.status).find((s) => s.name === "rv-lag")!
      const dl = (yield* daemon.status).find((s) => s.name === "rv-dl")!
      console.log("R3", store.name, { lagFiltered: st.lag, lagUnfiltered: dl.lag })
    }))
    it.scoped("R4 dead letters after a replay", () => Effect.gen(function*() {
      yield* startDaemon
      const id = newId("d")
      yield* put(id, new RvA({ mark: "poison-dl" }))
      const mine = Effect.map(Subscription.deadLetters("rv-dl"), (l) => l.filter((x) => x.envelope.streamId === id))
      yield* Effect.repeat(mine, { until: (l) => l.length > 0, schedule: Schedule.spaced("20 millis") }).pipe(Effect.timeout("5 seconds"))
      yield* Subscription.reset("rv-dl")
      yield* Effect.sleep("2 seconds")
      console.log("R4", store.name, { deadLettersForOneEvent: (yield* mine).length })
    }))
    it.scoped("R5 stale stop error after a reset to the head", () => Effect.gen(function*() {
      const daemon = yield* startDaemon
      const id = newId("s")
      yield* put(id, new RvA({ mark: "poison-stop" }))
      yield* Effect.sleep("1500 millis")
      const before = (yield* daemon.status).find((s) => s.name === "rv-stop")!
      const last = Chunk.toArray(yield* Stream.runCollect(EventStore.readAll({ allTenants: true }))).pop()!
      yield* Subscription.reset("rv-stop", last.position)
      yield* Effect.sleep("1 second")
      const after = (yield* daemon.status).find((s) => s.name === "rv-stop")!
      const stored = (yield* ProjectionDaemon.status).find((s) => s.name === "rv-stop")!
      console.log("R5", store.name, { before: before.error, afterDaemonStatus: after.error, afterStoreStatus: stored.error, leader: after.leader })
    }))
    it.effect("R6 non-live readAll while appending", () => Effect.gen(function*() {
      const tenant = newId("rt")
      yield* EventStore.withTenant(Effect.gen(function*() {
        const id = newId("r")
        yield* put(id, new RvB({ mark: "x" }), new RvB({ mark: "x" }), new RvB({ mark: "x" }))
        const got = yield* EventStore.readAll({ batchSize: 1 }).pipe(
          Stream.tap(() => put(newId("w"), new RvB({ mark: "w" }))),
          Stream.take(20), Stream.runCollect, Effect.timeout("10 seconds"), Effect.option)
        console.log("R6", store.name, { committedAtCall: 3, emitted: got._tag === "Some" ? Chunk.size(got.value) : "timeout" })
      }), tenant)
    }))
  })

suite(memoryStore)
suite(pgStore())

plainIt.scoped("R7 handler's EventStore when Projections.layer is built where another store is", () => Effect.gen(function*() {
  const who: Array<unknown> = []
  const SubWho = Subscription.make({ name: "rv-who", events: Schema.Union(RvA, RvB), handle: () => Effect.flatMap(EventStore, (s) => Effect.sync(() => who.push(s))) })
  const X = EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer([])))
  const ctxX = yield* Layer.build(X)
  const Y = EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer([SubWho])))
  const ctxY = yield* Effect.provide(Layer.build(Y), ctxX)
  const storeX = Context.get(ctxX as Context.Context<EventStore.EventStore>, EventStore.EventStore)
  const storeY = Context.get(ctxY as Context.Context<EventStore.EventStore>, EventStore.EventStore)
  yield* Effect.provide(Effect.gen(function*() {
    yield* startDaemon
    yield* put(newId("w"), new RvA({ mark: "who" }))
    yield* eventually(() => who.length > 0)
  }), ctxY)
  console.log("R7", { handlerGotY: who[0] === storeY, handlerGotX: who[0] === storeX })
}))

const lat: Array<{ mark: string; at: number }> = []
const SubLat = Subscription.make({ name: "rv-lat", events: Schema.Union(RvA, RvB), handle: (e) => Effect.sync(() => lat.push({ mark: e.data.mark, at: Date.now() })) })
layer(pgStore().layer([SubLat]), { excludeTestServices: true })("review pg wake-ups", (it) => {
  it.scoped("R8 a live readAll that ends turns the daemon's notifications off", () => Effect.gen(function*() {
    yield* Effect.map(Layer.build(ProjectionDaemon.layer({ pollInterval: "5 seconds" })), (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon))
    yield* Effect.sleep("1500 millis")
    const latency = (mark: string) => Effect.gen(function*() {
      const t0 = Date.now()
      yield* put(newId("lat"), new RvA({ mark }))
      yield* eventually(() => lat.some((l) => l.mark === mark), "10 seconds")
      return lat.find((l) => l.mark === mark)!.at - t0
    })
    const first = yield* latency("m1")
    const second = yield* latency("m2")
    yield* Stream.runCollect(EventStore.readAll({ live: true }).pipe(Stream.take(1)))
    yield* Effect.sleep("200 millis")
    const third = yield* latency("m3")
    const fourth = yield* latency("m4")
    console.log("R8", { beforeMs: [first, second], afterLiveReadAllEndedMs: [third, fourth] })
  }), { timeout: 60_000 })
})

const mk = (n: number) => Subscription.make({ name: `rv-pool-${n}`, events: Schema.Union(RvA, RvB), handle: (e) => Effect.sync(() => rec(`rv-pool-${n}`, e.data.mark)) })
layer(pgStore({ maxConnections: 3 }).layer([mk(1), mk(2), mk(3)]), { excludeTestServices: true })("review pg pool", (it) => {
  it.scoped("R9 three subscriptions on a pool of three", () => Effect.gen(function*() {
    yield* Effect.map(Layer.build(ProjectionDaemon.layer({ pollInterval: "100 millis" })), (ctx) => Context.get(ctx, ProjectionDaemon.ProjectionDaemon))
    yield* Effect.sleep("1 second")
    const saved = yield* put(newId("p"), new RvA({ mark: "pool" })).pipe(Effect.timeout("5 seconds"), Effect.either)
    yield* eventually(() => seenOf("rv-pool-1").includes("pool"), "3 seconds")
    console.log("R9", { save: saved._tag === "Right" ? "ok" : String((saved.left as any)?._tag), delivered: seenOf("rv-pool-1").includes("pool") })
  }), { timeout: 60_000 })
})
