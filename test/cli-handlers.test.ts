/**
 * The command line in-process, on the in-memory store: the same commands,
 * their output captured, and what only a terminal shows (the progress bar
 * redrawn in place).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { EventStore, EventStoreMemory, ProjectionDaemon, Projections, Session, Subscription } from "effect-chronicle"
import * as fs from "node:fs"
import * as path from "node:path"
import { createOrder, OrderCreated } from "../examples/order.js"
import * as ChronicleCli from "../src/ChronicleCli.js"
import * as Render from "../src/internal/cli/render.js"
import { DailyOrders, registrations } from "./cli-app.js"
import { newId } from "./support.js"

/** An output that keeps what is printed. */
const capture = (tty: boolean) => {
  const written: Array<string> = []
  const output: ChronicleCli.Output = {
    tty,
    line: (text) => Effect.sync(() => void written.push(text + "\n")),
    write: (text) => Effect.sync(() => void written.push(text))
  }
  return { output, text: () => written.join(""), written }
}

/** One in-memory store shared by every command of a test, and a command line over it. */
const setup = (tty = false) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer(registrations))))
    const out = capture(tty)
    const cli = ChronicleCli.make({
      registrations,
      store: () => Layer.succeedContext(context),
      output: out.output
    })
    const run = (...args: Array<string>) => Effect.provide(cli(["node", "cli", ...args]), NodeContext.layer)
    const inStore = <A, E>(effect: Effect.Effect<A, E, EventStore.EventStore>) => Effect.provide(effect, context)
    return { run, inStore, out }
  })

describe("ChronicleCli in-process, in-memory store", () => {
  it.scopedLive("streams list and show, in a tenant", () =>
    Effect.gen(function*() {
      const { inStore, out, run } = yield* setup()
      const a = newId("order")
      const b = newId("order")
      yield* inStore(EventStore.withTenant(Effect.zipRight(createOrder(a, ["kettle"]), createOrder(b, ["cups"])), "t1"))
      yield* run("streams", "list", "--tenant", "t1")
      const lines = out.text().trim().split("\n")
      assert.deepStrictEqual(lines.slice(1).map((l) => l.split(/\s+/)[0]), [b, a])
      out.written.length = 0
      yield* run("streams", "show", a, "--tenant", "t1")
      assert.include(out.text(), `Stream ${a} (tenant t1): 1 event, version 1`)
      assert.include(out.text(), `"name": "kettle"`)
      const missing = yield* Effect.exit(run("streams", "show", a))
      assert.isTrue(Exit.isFailure(missing))
      const text = Exit.isFailure(missing) ? ChronicleCli.describeFailure(missing.cause) : undefined
      assert.strictEqual(text, `StreamNotFoundError: No stream "${a}" in tenant "*DEFAULT*"`)
    }))

  it.scopedLive("rebuild on a terminal redraws one bar in place, then ends the line", () =>
    Effect.gen(function*() {
      const { inStore, out, run } = yield* setup(true)
      const ids = [newId("order"), newId("order"), newId("order")]
      for (const id of ids) yield* inStore(createOrder(id, ["kettle", "cups"]))
      yield* run("projections", "rebuild", "DailyOrders")
      const text = out.text()
      assert.include(text, "\rDailyOrders v1 [..............................]   0% 0/3")
      assert.include(text, "\rDailyOrders v1 [##############################] 100% 3/3\n")
      assert.include(text, "Rebuilt DailyOrders v1: 3 events replayed.")
      // Redrawn in place: one line for the bar, one for the summary.
      assert.strictEqual(text.split("\n").length, 3)
      const day = (yield* inStore(Session.run(Session.readStream(ids[0]))))[0].timestamp.toISOString().slice(0, 10)
      assert.deepStrictEqual(Option.getOrThrow(yield* inStore(Session.run(Session.loadDocument(DailyOrders, day)))), { orders: 3, items: 6 })
    }))

  it.scopedLive("status, then the daemon until interrupted", () =>
    Effect.gen(function*() {
      const { inStore, out, run } = yield* setup()
      const id = newId("order")
      yield* inStore(createOrder(id, ["kettle"]))
      yield* run("projections", "status", "--json")
      const before = JSON.parse(out.text()) as ReadonlyArray<ProjectionDaemon.Status>
      assert.deepStrictEqual(before.map((s) => [s.name, s.lag]), [["DailyOrders", 1], ["cli-audit", 1]])
      out.written.length = 0
      const daemon = yield* Effect.fork(run("daemon"))
      yield* Effect.repeat(Effect.sync(() => out.text().includes("Projection daemon running")), { until: (b) => b })
      yield* inStore(ProjectionDaemon.waitForNonStale({ timeout: "10 seconds" }))
      yield* Fiber.interrupt(daemon)
      assert.include(out.text(), "Projection daemon running: DailyOrders v1, cli-audit (subscription).")
      assert.include(out.text(), "Projection daemon stopped: positions stored.")
      const after = yield* inStore(ProjectionDaemon.status)
      assert.deepStrictEqual(after.map((s) => s.lag), [0, 0])
      const day = (yield* inStore(Session.run(Session.readStream(id))))[0].timestamp.toISOString().slice(0, 10)
      assert.deepStrictEqual(Option.getOrThrow(yield* inStore(Session.run(Session.loadDocument(DailyOrders, day)))), { orders: 1, items: 1 })
    }))
})

describe("rendering", () => {
  it("a bar fills with progress, and an empty log is a full bar", () => {
    assert.strictEqual(Render.bar({ processed: 1, total: 4 }, 8), "[##......]  25% 1/4")
    assert.strictEqual(Render.bar({ processed: 0, total: 0 }, 8), "[########] 100% 0/0")
    assert.strictEqual(Render.progressLine("P v1", { processed: 5, total: 10 }), "rebuild P v1: 5/10 events (50%)")
  })

  it("tables pad columns and right-align numbers", () => {
    assert.strictEqual(Render.table(["A", "N"], [["xy", "1"], ["z", "10"]], new Set([1])), "A    N\nxy   1\nz   10")
  })
})

describe("entry points", () => {
  // Every module the package root loads, following relative imports from src/index.ts.
  const reachable = (start: string) => {
    const seen = new Set<string>()
    const visit = (file: string) => {
      if (seen.has(file)) return
      seen.add(file)
      for (const [, spec] of fs.readFileSync(file, "utf8").matchAll(/from "(\.{1,2}\/[^"]+)"/g)) {
        visit(path.resolve(path.dirname(file), spec.replace(/\.js$/, ".ts")))
      }
    }
    visit(start)
    return [...seen]
  }

  it("the package root never loads @effect/cli or @effect/platform-node; the cli entry does", () => {
    const uses = (files: ReadonlyArray<string>) =>
      files.filter((file) => /from "@effect\/(cli|platform-node)[/"]/.test(fs.readFileSync(file, "utf8")))
    const src = path.resolve(__dirname, "../src")
    const root = reachable(path.join(src, "index.ts"))
    assert.isAbove(root.length, 20)
    assert.deepStrictEqual(uses(root), [])
    assert.isNotEmpty(uses(reachable(path.join(src, "cli.ts"))))
  })
})

// Checked by the type check (never run): a subscription that needs a service makes `services` required.
class Mailer extends Context.Tag("test/Mailer")<Mailer, { readonly send: Effect.Effect<void> }>() {}
const Notify = Subscription.make({ name: "notify", events: OrderCreated, handle: () => Effect.flatMap(Mailer, (m) => m.send) })
export const typeLevel = () => [
  ChronicleCli.make(),
  ChronicleCli.make({ registrations }),
  ChronicleCli.make({ registrations: [Notify], services: Layer.succeed(Mailer, { send: Effect.void }) }),
  // @ts-expect-error the subscription needs Mailer: services are required
  ChronicleCli.make({ registrations: [Notify] }),
  // @ts-expect-error services must provide what the subscriptions need
  ChronicleCli.make({ registrations: [Notify], services: Layer.empty })
]
