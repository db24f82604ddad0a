/**
 * Steps of Effect's run loop per operation: how many effects the fiber of
 * one `runPromise` evaluates for an append (append + save), a command (fetch,
 * append, save) and a Live fetch, on PostgreSQL and in memory. A count, not
 * a timing: it does not move with the host's load, so a change to the hot
 * path shows its cost in steps at once. Counted by a supervisor with op
 * supervision on (public API: `Supervisor.addSupervisor`, `RuntimeFlags.enableOpSupervision`).
 *
 *   npx tsc -p tsconfig.bench.json && node .bench-dist/bench/steps.js
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as Supervisor from "effect/Supervisor"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { CommandHandler, EventStore, EventStoreMemory, EventStorePg, Projections, Session } from "../src/index.js"
import { Counter, Incremented } from "./contenders/chronicle.js"

class Counting extends Supervisor.AbstractSupervisor<number> {
  steps = 0
  on = false
  get value() {
    return Effect.sync(() => this.steps)
  }
  onEffect<A, E>(_fiber: Fiber.RuntimeFiber<A, E>, _effect: Effect.Effect<any, any, any>): void {
    if (this.on) this.steps++
  }
}

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const schema = `bench_steps_${process.pid}`
const one = new Incremented({ by: 1 })
const operations: ReadonlyArray<readonly [string, (id: string) => Effect.Effect<unknown, unknown, EventStore.EventStore>]> = [
  ["append (append + saveChanges)", (id) => Session.run(Effect.zipRight(Session.append(Counter, id, [one]), Session.saveChanges))],
  ["command (fetchForWriting, appendOne, saveChanges)", (id) =>
    Session.run(Effect.gen(function*() {
      const stream = yield* Session.fetchForWriting(Counter, id)
      yield* stream.appendOne(one)
      yield* Session.saveChanges
    }))],
  ["Live fetch (fetchForWriting)", (id) => Session.run(Session.fetchForWriting(Counter, id))],
  ["command through CommandHandler", CommandHandler.make(Counter, { id: (id: string) => id, decide: () => [one] })],
  ["exclusive command through CommandHandler", CommandHandler.make(Counter, { id: (id: string) => id, decide: () => [one], exclusive: true })]
]

const count = async (name: string, store: Layer.Layer<EventStore.EventStore, unknown>) => {
  const counting = new Counting()
  const rt = ManagedRuntime.make(Layer.mergeAll(store, Supervisor.addSupervisor(counting), RuntimeFlags.enableOpSupervision))
  await rt.runPromise(Effect.void)
  const n = 200
  for (const [operation, op] of operations) {
    // Warm: the first operation of a kind prepares statements and builds decoders.
    for (let i = 0; i < 20; i++) await rt.runPromise(op(`w-${i}`))
    counting.steps = 0
    counting.on = true
    // One at a time, so that no statement is combined with another's.
    for (let i = 0; i < n; i++) await rt.runPromise(op(`s-${i % 20}`))
    counting.on = false
    console.log(`| ${name} | ${operation} | ${(counting.steps / n).toFixed(0)} |`)
  }
  await rt.dispose()
}

const main = async () => {
  console.log("| store | operation | Effect steps |\n|---|---|---:|")
  await count("memory", EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer([]))))
  const client = PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })
  await count("PostgreSQL", EventStorePg.layer({ schema }).pipe(Layer.provideMerge(Projections.layer([])), Layer.provideMerge(client)))
  await Effect.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`)).pipe(Effect.provide(client)))
}
main()
