/**
 * One operation in a loop, for CPU profiles: prints ops/s and Node CPU per
 * operation. The README's performance notes come from
 *
 *   npx tsc -p tsconfig.bench.json
 *   MODE=command W=8 node --cpu-prof .bench-dist/bench/profile.js
 *
 *   MODE  append | command | fetch (default append; fetch: a Live fetch of a 1,000-event stream)
 *   W     concurrent writers (default 8)
 *   N     operations (default 20000)          DATABASE_URL  the server (default the local one)
 *   CONTENDER  chronicle | raw (default chronicle): raw runs the benchmark's raw SQL
 *              contender the same way, for Node CPU per operation side by side
 *   TRACING=1  effect-chronicle with a real OpenTelemetry tracer (spans batched to an exporter that drops them)
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { PgClient } from "@effect/sql-pg"
import pg from "pg"
import { EventStorePg, Projections, Session } from "../src/index.js"
import { Counter, Incremented, tracingLayer } from "./contenders/chronicle.js"
import { raw } from "./contenders/raw.js"

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const schema = `bench_profile_${process.pid}`
const N = Number(process.env.N ?? 20000)
const W = Number(process.env.W ?? 8)
const mode = process.env.MODE ?? "append"
const tracing = process.env.TRACING === "1"
const contender = `${process.env.CONTENDER ?? "chronicle"}${tracing ? " (tracing on)" : ""}`
// A multiple of W for any W up to 1024 that divides it: no two workers meet on a stream.
const ids = mode === "fetch" ? Array.from({ length: 16 }, (_, i) => `s-${i}`) : Array.from({ length: 1024 }, (_, i) => `s-${i}`)
const seedEvents = mode === "fetch" ? 1000 : 10

const loop = async (op: (id: string) => Promise<unknown>) => {
  let n = 0
  const cpu0 = process.cpuUsage()
  const t = performance.now()
  await Promise.all(Array.from({ length: W }, async (_, w) => {
    for (let i = w; i < N; i += W) {
      await op(ids[i % ids.length])
      n++
    }
  }))
  const ms = performance.now() - t
  const cpu = process.cpuUsage(cpu0)
  console.log(`${contender} ${mode} W=${W}: ${(n / ms * 1000).toFixed(0)} ops/s, cpu ${((cpu.user + cpu.system) / n).toFixed(0)} us/op`)
}

const main = async () => {
  if (contender.startsWith("raw")) {
    await raw.setup(url)
    await raw.seed(ids, seedEvents)
    await loop(mode === "append" ? raw.append : mode === "fetch" ? raw.fetch : raw.command)
    await raw.teardown()
    return
  }
  const client = PgClient.layer({ url: Redacted.make(url), maxConnections: 30 })
  const rt = ManagedRuntime.make(EventStorePg.layer({ schema }).pipe(
    Layer.provideMerge(Projections.layer([])),
    Layer.provideMerge(client),
    Layer.merge(tracing ? tracingLayer() : Layer.empty)
  ))
  await rt.runPromise(Effect.void)
  const one = new Incremented({ by: 1 })
  for (const id of ids) {
    for (let i = 0; i < seedEvents; i += 100) {
      await rt.runPromise(Session.run(Effect.zipRight(Session.append(Counter, id, Array.from({ length: Math.min(100, seedEvents - i) }, () => one)), Session.saveChanges)))
    }
  }
  await loop(mode === "append"
    ? (id) => rt.runPromise(Session.run(Effect.zipRight(Session.append(Counter, id, [one]), Session.saveChanges)))
    : mode === "fetch"
    ? (id) => rt.runPromise(Session.run(Effect.map(Session.fetchForWriting(Counter, id), (s) => s.aggregate)))
    : (id) => rt.runPromise(Session.run(Effect.gen(function*() {
      const stream = yield* Session.fetchForWriting(Counter, id)
      yield* stream.appendOne(one)
      yield* Session.saveChanges
    }))))
  const pool = new pg.Pool({ connectionString: url })
  await pool.query(`DROP SCHEMA "${schema}" CASCADE`)
  await pool.end()
  await rt.dispose()
}
main()
