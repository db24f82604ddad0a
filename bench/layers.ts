/**
 * The layers of a save, each timed on its own against the same server, in
 * one process and interleaved rounds: node-postgres running effect-chronicle's
 * append statement; the same statement as an Effect program through
 * `@effect/sql-pg` (`sql.unsafe`) and through the store's driver (named,
 * prepared: the floor of any Effect program sending it); the PostgreSQL
 * storage's `commit` of a ready batch (write-combining, result parsing); and
 * a whole `Session.run(append + saveChanges)`. With MODE=command, a command
 * on a 10-event stream: the lean read and the save at the version it gave,
 * through node-postgres, as one Effect program through the driver, and as
 * `Session.run(fetchForWriting, appendOne, saveChanges)`. What one layer adds
 * over the one below is what it costs, Node CPU and latency per operation.
 *
 *   npx tsc -p tsconfig.bench.json && [MODE=append|command] [W=1] [N=2000] [ROUNDS=7] node .bench-dist/bench/layers.js
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import pg from "pg"
import { EventStorePg, Projections, Session } from "../src/index.js"
import * as Driver from "../src/pg/driver.js"
import * as PgStorage from "../src/pg/PgStorage.js"
import type * as Storage from "../src/Storage.js"
import { Counter, Incremented } from "./contenders/chronicle.js"

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const schema = `bench_layers_${process.pid}`
const W = Number(process.env.W ?? 1)
const N = Number(process.env.N ?? 2000)
const ROUNDS = Number(process.env.ROUNDS ?? 7)
const mode = process.env.MODE ?? "append"
const ids = Array.from({ length: 1024 }, (_, i) => `s-${i}`)

const loop = async (op: (id: string) => Promise<unknown>) => {
  const cpu0 = process.cpuUsage()
  const t = performance.now()
  await Promise.all(Array.from({ length: W }, async (_, w) => {
    for (let i = w; i < N; i += W) await op(ids[i % ids.length])
  }))
  const ms = performance.now() - t
  const cpu = process.cpuUsage(cpu0)
  return { opsPerSecond: N / ms * 1000, cpu: (cpu.user + cpu.system) / N }
}
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const main = async () => {
  const client = PgClient.layer({ url: Redacted.make(url), maxConnections: 10 })
  const rt = ManagedRuntime.make(EventStorePg.layer({ schema }).pipe(Layer.provideMerge(Projections.layer([])), Layer.provideMerge(client)))
  await rt.runPromise(Effect.void)
  const sql = await rt.runPromise(SqlClient.SqlClient)
  const driver = await rt.runPromise(Driver.make(sql, []))
  const storage = await rt.runPromise(Effect.scoped(PgStorage.make({ schema })))
  const pool = new pg.Pool({ connectionString: url, max: 10 })
  const text = PgStorage.singleStreamStatement(`"${schema}"`, "any", false, false, true)
  const payload = JSON.stringify({ by: 1 })
  const values = (id: string) => [id, 1, 0, "Counter", "*DEFAULT*", "Incremented", payload, "{}"]
  const batch = (id: string): Storage.CommitBatch => ({
    tenantId: "*DEFAULT*",
    streams: [{ streamId: id, aggregateType: "Counter", expected: "any", events: [{ type: "Incremented", data: { by: 1 }, metadata: {} }] }]
  })
  const one = new Incremented({ by: 1 })
  const q = PgStorage.statements(`"${schema}"`)
  const exact = PgStorage.singleStreamStatement(`"${schema}"`, "exact", false, false, true)
  const saveValues = (id: string, version: number) => [id, 1, version, "Counter", "*DEFAULT*", "Incremented", payload, "{}"]
  // The lean read's JSON: one [version, type, data] per event.
  const versionOf = (rows: ReadonlyArray<{ readonly events: string | null }>) => {
    const events: Array<[number, string, { by: number }]> = rows[0]?.events == null ? [] : JSON.parse(rows[0].events)
    return events.length === 0 ? 0 : events[events.length - 1][0]
  }
  const commands: ReadonlyArray<readonly [string, (id: string) => Promise<unknown>]> = [
    ["node-postgres, the read and the save (named)", async (id) => {
      const { rows } = await pool.query({ name: "layers_read", text: q.readFold, values: [id, "*DEFAULT*"] })
      await pool.query({ name: "layers_exact", text: exact, values: saveValues(id, versionOf(rows)) })
    }],
    ["Effect: the driver's read, then its save", (id) =>
      rt.runPromise(Effect.flatMap(
        Driver.prepared<{ events: string | null }>(driver, "layers_read_fx", q.readFold, [id, "*DEFAULT*"]),
        (rows) => Driver.prepared(driver, "layers_exact_fx", exact, saveValues(id, versionOf(rows)))
      ))],
    ["Effect: Session.run(fetchForWriting, appendOne, saveChanges)", (id) =>
      rt.runPromise(Session.run(Effect.flatMap(Session.fetchForWriting(Counter, id), (stream) => Effect.zipRight(stream.appendOne(one), Session.saveChanges))))]
  ]
  const appends: ReadonlyArray<readonly [string, (id: string) => Promise<unknown>]> = [
    ["node-postgres, the append statement (named)", (id) => pool.query({ name: "layers_append", text, values: values(id) })],
    ["Effect: sql.unsafe (@effect/sql-pg, unnamed)", (id) => rt.runPromise(sql.unsafe(text, values(id)))],
    ["Effect: the driver's prepared statement", (id) => rt.runPromise(Driver.prepared(driver, "layers_append_fx", text, values(id)))],
    ["Effect: the storage's commit of a batch", (id) => rt.runPromise(storage.commit(batch(id)))],
    ["Effect: Session.run(append + saveChanges)", (id) => rt.runPromise(Session.run(Effect.zipRight(Session.append(Counter, id, [one]), Session.saveChanges)))]
  ]
  const layers = mode === "command" ? commands : appends
  if (mode === "command") {
    // Streams of 10 events, so that each command reads some.
    for (const id of ids) await rt.runPromise(Session.run(Effect.zipRight(Session.append(Counter, id, Array.from({ length: 10 }, () => one)), Session.saveChanges)))
  }
  const results = layers.map(() => ({ ops: [] as Array<number>, cpu: [] as Array<number> }))
  for (const [, op] of layers) await loop(op) // warm-up: statements prepared, code optimised
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < layers.length; i++) {
      const m = await loop(layers[i][1])
      results[i].ops.push(m.opsPerSecond)
      results[i].cpu.push(m.cpu)
    }
  }
  const base = median(results[0].ops)
  console.log(`${mode}, W=${W}, ${N} operations a round, median of ${ROUNDS} interleaved rounds\n`)
  console.log("| layer | ops/s | × node-postgres | Node CPU µs/op |\n|---|---:|---:|---:|")
  layers.forEach(([name], i) => {
    const ops = median(results[i].ops)
    console.log(`| ${name} | ${ops.toFixed(0)} | ${(ops / base).toFixed(2)} | ${median(results[i].cpu).toFixed(0)} |`)
  })
  await pool.query(`DROP SCHEMA "${schema}" CASCADE`)
  await pool.end()
  await rt.dispose()
}
main()
