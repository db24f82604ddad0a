/**
 * The command line, run as a child process against PostgreSQL on scratch
 * schemas: the bare `effect-chronicle` bin (src/bin.ts) and an application's
 * own bin with registrations (test/cli-bin.ts). Each is bundled once with
 * esbuild (packages left external), so that a run costs what the compiled bin
 * costs; one test runs src/bin.ts itself through tsx.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { build } from "esbuild"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest"
import { Aggregate, EventStore, EventStorePg, ProjectionDaemon, Projections, Session } from "effect-chronicle"
import { createOrder, markItemReady } from "../examples/order.js"
import { DailyOrders, registrations } from "./cli-app.js"
import { newId } from "./support.js"

const root = path.resolve(__dirname, "..")
const url = inject("databaseUrl")
const schema = `chronicle_cli_${Math.random().toString(36).slice(2, 10)}`
const migrateSchema = `${schema}_m`

interface Ran {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

// Inside the worktree, so that the bundles find node_modules.
const bundles = path.join(root, ".scratch", `cli-${Math.random().toString(36).slice(2, 10)}`)

/** The bare bin, the application's bin (bundled), or src/bin.ts itself through tsx. */
type Bin = "bare" | "app" | "tsx"
const commandOf = (bin: Bin) =>
  bin === "tsx" ? ["--import", "tsx", "src/bin.ts"] : [path.join(bundles, `${bin}.mjs`)]

/** Starts a bin; DATABASE_URL is the test's unless `env` says otherwise. */
const spawn = (bin: Bin, args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}, preload: ReadonlyArray<string> = []) => {
  const child = childProcess.spawn(process.execPath, [...preload.flatMap((p) => ["--import", p]), ...commandOf(bin), ...args], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: url, NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const out = { stdout: "", stderr: "" }
  child.stdout.on("data", (chunk: Buffer) => (out.stdout += chunk.toString("utf-8")))
  child.stderr.on("data", (chunk: Buffer) => (out.stderr += chunk.toString("utf-8")))
  const done = new Promise<Ran>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal, stdout: out.stdout, stderr: out.stderr })))
  return { child, out, done }
}

const cli = (bin: Bin, args: ReadonlyArray<string>, env?: Record<string, string | undefined>, preload?: ReadonlyArray<string>) =>
  spawn(bin, args, env, preload).done

const until = async (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000) => {
  const start = Date.now()
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

class Noted extends Schema.TaggedClass<Noted>()("Noted", { text: Schema.String }) {}
const Note = Aggregate.make({ name: "Note", events: Noted, initial: [] as ReadonlyArray<string>, evolve: (s, e) => [...s, e.text] })

// The tests' own view of the store the bins work on (the schema is migrated by the first use).
const store = ManagedRuntime.make(
  EventStorePg.layer({ schema }).pipe(
    Layer.provideMerge(Projections.layer(registrations)),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )
)
const inStore = <A, E>(effect: Effect.Effect<A, E, EventStore.EventStore | SqlClient.SqlClient>) => store.runPromise(effect)
const statusOf = async (name: string) => {
  const rows = await inStore(ProjectionDaemon.status)
  return rows.find((r) => r.name === name)!
}
const dayOf = (id: string) =>
  inStore(Effect.map(Session.run(Session.readStream(id)), (events) => events[0].timestamp.toISOString().slice(0, 10)))
const dailyDocument = (day: string) => inStore(Session.run(Session.loadDocument(DailyOrders, day)))

const orders: Array<string> = []
const tenantOrder = newId("acme-order")

beforeAll(async () => {
  await build({
    entryPoints: { bare: path.join(root, "src/bin.ts"), app: path.join(root, "test/cli-bin.ts") },
    outdir: bundles,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    packages: "external",
    alias: { "effect-chronicle": path.join(root, "src/index.ts") },
    logLevel: "warning"
  })
  // Five orders (the first with a second event), a note, and an order in tenant "acme".
  for (let i = 0; i < 5; i++) {
    const id = newId(`order${i}`)
    orders.push(id)
    await inStore(createOrder(id, ["kettle", "cups"]))
  }
  await inStore(markItemReady({ orderId: orders[0], itemName: "kettle" }))
  await inStore(Session.run(Effect.zipRight(Session.startStream(Note, newId("note"), [new Noted({ text: "hello" })]), Session.saveChanges)))
  await inStore(EventStore.withTenant(createOrder(tenantOrder, ["teapot"]), "acme"))
}, 120_000)

afterAll(async () => {
  await inStore(Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.zipRight(
      sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`),
      sql.unsafe(`DROP SCHEMA IF EXISTS "${migrateSchema}" CASCADE`)
    )))
  await store.dispose()
  fs.rmSync(bundles, { recursive: true, force: true })
})

describe("effect-chronicle command line", { timeout: 120_000 }, () => {
  it("migrate creates the tables in the schema, then says it is up to date", async () => {
    const first = await cli("bare", ["migrate", "--schema", migrateSchema, "--database-url", url], { DATABASE_URL: undefined })
    expect(first.stderr).toBe("")
    expect(first.code).toBe(0)
    expect(first.stdout).toContain(`Migrated schema "${migrateSchema}": applied 1 streams_and_events, 2 projections`)
    const tables = await inStore(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql.unsafe<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [migrateSchema])))
    expect(tables.map((t) => t.table_name)).toEqual(
      expect.arrayContaining(["commits", "dead_letters", "documents", "events", "migrations", "projection_progress", "streams"])
    )
    const again = await cli("bare", ["migrate", "--schema", migrateSchema])
    expect(again.code).toBe(0)
    expect(again.stdout).toContain(`Schema "${migrateSchema}" is up to date (7 migrations`)
  })

  it("streams list: newest first, by type, paged by page and by cursor", async () => {
    const all = await cli("bare", ["streams", "list", "--schema", schema, "--type", "Order"])
    expect(all.code).toBe(0)
    const lines = all.stdout.trim().split("\n")
    expect(lines[0]).toMatch(/^STREAM\s+TYPE\s+VERSION\s+CREATED\s+UPDATED\s+ARCHIVED$/)
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([...orders].reverse())
    // The oldest order has two events.
    expect(lines[5]).toMatch(new RegExp(`^${orders[0]}\\s+Order\\s+2\\s+\\d{4}-`))
    expect(all.stdout).not.toContain("note-")

    const first = await cli("bare", ["streams", "list", "--schema", schema, "--type", "Order", "--limit", "2"])
    expect(first.stdout).toContain(orders[4])
    expect(first.stdout).toContain(orders[3])
    expect(first.stdout).toContain(`More streams follow: --after ${orders[3]} or --page 2`)
    const page = await cli("bare", ["streams", "list", "--schema", schema, "--type", "Order", "--limit", "2", "--page", "3", "--json"])
    expect(JSON.parse(page.stdout).streams.map((s: { streamId: string }) => s.streamId)).toEqual([orders[0]])
    const after = await cli("bare", ["streams", "list", "--schema", schema, "--limit", "2", "--after", orders[3], "--json"])
    const parsed = JSON.parse(after.stdout)
    expect(parsed.streams.map((s: { streamId: string }) => s.streamId)).toEqual([orders[2], orders[1]])
    expect(parsed.more).toBe(true)
    // Without a type the note is listed too, newest first.
    const untyped = await cli("bare", ["streams", "list", "--schema", schema, "--limit", "1"])
    expect(untyped.stdout).toMatch(/note-\S+\s+Note\s+1/)
  })

  it("streams show prints each event's version, type, time and data; --json too", async () => {
    const shown = await cli("bare", ["streams", "show", orders[0], "--schema", schema])
    expect(shown.code).toBe(0)
    expect(shown.stdout).toContain(`Stream ${orders[0]} (tenant *DEFAULT*): 2 events, version 2`)
    expect(shown.stdout).toMatch(/#1 {2}OrderCreated {2}\d{4}-\d\d-\d\dT[\d:.]+Z/)
    expect(shown.stdout).toMatch(/#2 {2}ItemReady {2}\d{4}-/)
    expect(shown.stdout).toContain(`"name": "kettle"`)
    const json = await cli("bare", ["streams", "show", orders[0], "--schema", schema, "--json"])
    const events = JSON.parse(json.stdout)
    expect(events.map((e: { version: number; type: string }) => [e.version, e.type])).toEqual([[1, "OrderCreated"], [2, "ItemReady"]])
    expect(events[1].data).toEqual({ name: "kettle" })
  })

  it("a bad or unknown stream id prints a typed error and exits non-zero", async () => {
    const unknown = await cli("bare", ["streams", "show", "no-such-order", "--schema", schema])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain(`StreamNotFoundError: No stream "no-such-order" in tenant "*DEFAULT*"`)
    const blank = await cli("bare", ["streams", "show", " ", "--schema", schema])
    expect(blank.code).toBe(1)
    expect(blank.stderr).toContain("InvalidStreamIdError")
    const cursor = await cli("bare", ["streams", "list", "--after", "no-such-order", "--schema", schema])
    expect(cursor.code).toBe(1)
    expect(cursor.stderr).toContain("InvalidOptionError: Invalid option after (no-such-order)")
  })

  it("--tenant scopes listing and showing to that tenant", async () => {
    const inAcme = await cli("bare", ["streams", "list", "--schema", schema, "--tenant", "acme", "--json"])
    expect(JSON.parse(inAcme.stdout).streams.map((s: { streamId: string; tenantId: string }) => [s.streamId, s.tenantId]))
      .toEqual([[tenantOrder, "acme"]])
    const shown = await cli("bare", ["streams", "show", tenantOrder, "--schema", schema, "--tenant", "acme"])
    expect(shown.stdout).toContain(`Stream ${tenantOrder} (tenant acme): 1 event`)
    const outside = await cli("bare", ["streams", "show", tenantOrder, "--schema", schema])
    expect(outside.code).toBe(1)
    expect(outside.stderr).toContain("StreamNotFoundError")
    const bad = await cli("bare", ["streams", "list", "--schema", schema, "--tenant", ""])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("InvalidTenantIdError")
  })

  it("projections status shows each projection's and subscription's lag", async () => {
    const head = (await inStore(ProjectionDaemon.status))[0].head
    const json = await cli("app", ["projections", "status", "--schema", schema, "--json"])
    expect(json.code).toBe(0)
    const rows = JSON.parse(json.stdout) as ReadonlyArray<ProjectionDaemon.Status>
    expect(rows.map((r) => [r.kind, r.name, r.checkpoint, r.lag])).toEqual([
      ["projection", "DailyOrders", 0, head],
      ["subscription", "cli-audit", 0, head]
    ])
    const text = await cli("app", ["projections", "status", "--schema", schema])
    expect(text.stdout).toMatch(/^KIND\s+NAME\s+VERSION\s+POSITION\s+CHECKPOINT\s+HEAD\s+LAG\s+ERROR$/m)
    expect(text.stdout).toMatch(new RegExp(`^projection\\s+DailyOrders\\s+1\\s+0/0\\s+0\\s+${head}\\s+${head}\\s+-$`, "m"))
    expect(text.stdout).toMatch(new RegExp(`^subscription\\s+cli-audit\\s+0\\s+0/0\\s+0\\s+${head}\\s+${head}\\s+-$`, "m"))
    const bare = await cli("bare", ["projections", "status", "--schema", schema])
    expect(bare.code).toBe(0)
    expect(bare.stdout).toContain("No Async projection or subscription is registered")
  })

  it("projections rebuild shows its progress and rebuilds the documents", async () => {
    const day = await dayOf(orders[0])
    expect(Option.isNone(await dailyDocument(day))).toBe(true)
    const rebuilt = await cli("app", ["projections", "rebuild", "DailyOrders", "--schema", schema])
    expect(rebuilt.stderr).toBe("")
    expect(rebuilt.code).toBe(0)
    // Not a terminal: a line per step, from 0 to all of the log's events.
    const total = (await statusOf("DailyOrders")).head
    expect(rebuilt.stdout).toContain(`rebuild DailyOrders v1: 0/${total} events (0%)`)
    expect(rebuilt.stdout).toContain(`rebuild DailyOrders v1: ${total}/${total} events (100%)`)
    expect(rebuilt.stdout).toContain(`Rebuilt DailyOrders v1: ${total} events replayed.`)
    // Five orders of two items in the default tenant (the acme order is acme's document).
    expect(Option.getOrThrow(await dailyDocument(day))).toEqual({ orders: 5, items: 10 })
    const inline = await cli("app", ["projections", "rebuild", "Order", "--schema", schema])
    expect(inline.code).toBe(0)
    expect(inline.stdout).toContain("Rebuilt Order v1")
  })

  it("an unknown projection prints a typed error naming the known ones; the bare bin says it has none", async () => {
    const unknown = await cli("app", ["projections", "rebuild", "Nope", "--schema", schema])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain(`UnknownProjectionError: No Inline or Async projection "Nope" is registered (known: Order v1, DailyOrders v1)`)
    const bare = await cli("bare", ["projections", "rebuild", "DailyOrders", "--schema", schema])
    expect(bare.code).toBe(1)
    expect(bare.stderr).toContain("this command line has no registrations")
    expect(bare.stderr).toContain("ChronicleCli.run({ registrations")
    const daemon = await cli("bare", ["daemon", "--schema", schema])
    expect(daemon.code).toBe(1)
    expect(daemon.stderr).toContain("NoRegistrationsError")
  })

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`daemon projects new events, then stops cleanly on ${signal} with exit code 0`, async () => {
      const daemon = spawn("app", ["daemon", "--schema", schema])
      try {
        await until(() => daemon.out.stdout.includes("Projection daemon running"), "the daemon to start", 60_000)
        const id = newId(`late-${signal}`)
        await inStore(createOrder(id, ["mug"]))
        const day = await dayOf(id)
        await until(async () => (await statusOf("DailyOrders")).lag === 0 && (await statusOf("cli-audit")).lag === 0, "the daemon to catch up")
        // The day's document counts every order of that day in the log, the new one included.
        const ofDay = await inStore(EventStore.readAll({ types: ["OrderCreated"] }).pipe(
          Stream.filter((e) => e.timestamp.toISOString().startsWith(day)),
          Stream.runCount
        ))
        expect(Option.getOrThrow(await dailyDocument(day)).orders).toBe(ofDay)
      } finally {
        daemon.child.kill(signal)
      }
      const ran = await daemon.done
      expect(ran.stderr).toBe("")
      expect(ran.code).toBe(0)
      expect(ran.stdout).toContain("Projection daemon stopped: positions stored.")
      // Its positions stay where it left them: at the head.
      const status = await inStore(ProjectionDaemon.status)
      expect(status.map((s) => s.lag)).toEqual([0, 0])
    })
  }

  it("without --database-url or DATABASE_URL it says so", async () => {
    const ran = await cli("bare", ["streams", "list"], { DATABASE_URL: "" })
    expect(ran.code).toBe(1)
    expect(ran.stderr).toContain("MissingDatabaseUrlError: No database: pass --database-url")
  })

  it("src/bin.ts runs as it is (through tsx)", async () => {
    const ran = await cli("tsx", ["streams", "list", "--schema", schema, "--tenant", "acme"])
    expect(ran.code).toBe(0)
    expect(ran.stdout).toContain(tenantOrder)
  })

  it("without its optional peers the bin names the packages to install", async () => {
    const ran = await cli("tsx", ["--version"], {}, ["./test/hide-peers.mjs"])
    expect(ran.code).toBe(1)
    expect(ran.stderr).toContain("the command line needs @effect/cli, @effect/printer, not installed")
    expect(ran.stderr).toContain("npm install @effect/cli@^0.77 @effect/printer@^0.51 @effect/printer-ansi@^0.51 @effect/platform-node@^0.108")
  })
})
