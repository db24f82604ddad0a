/**
 * effect-chronicle, used as an application would: a runtime built once from
 * the store's layers, each operation one Effect program run on it.
 */
import * as Resource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { PgClient } from "@effect/sql-pg"
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { Aggregate, CommandHandler, EventStore, EventStorePg, Projection, Projections, Session } from "../../src/index.js"
import { type Contender, poolSize } from "../contender.js"

export class Incremented extends Schema.TaggedClass<Incremented>()("Incremented", { by: Schema.Number }) {}
export const Counter = Aggregate.make({
  name: "Counter",
  events: Incremented,
  state: Schema.Struct({ total: Schema.Number }),
  initial: { total: 0 },
  evolve: (state, event) => ({ total: state.total + event.by })
})
const one = new Incremented({ by: 1 })
const decide = () => [one]

// An exporter that drops what it is given: the cost of tracing in this process, not of a collector.
const dropping: SpanExporter = {
  export: (_spans: Array<ReadableSpan>, done) => done({ code: 0 }),
  shutdown: () => Promise.resolve()
}

/** A real OpenTelemetry tracer (the SDK's, batching spans) whose exporter drops them. */
export const tracingLayer = () =>
  OtelTracer.layer.pipe(
    Layer.provide(Layer.succeed(
      OtelTracer.OtelTracerProvider,
      new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropping)] })
    )),
    Layer.provide(Resource.layer({ serviceName: "bench" }))
  )

/** Builds a contender whose Counter streams have the given lifecycle. */
export const chronicle = (
  lifecycle: Projection.Lifecycle,
  name = `effect-chronicle${lifecycle === "Live" ? "" : ` (${lifecycle})`}`,
  options?: { readonly combining?: boolean; readonly liveStateCache?: number; readonly tracing?: boolean }
) => {
  const schema = `bench_chronicle_${lifecycle.toLowerCase()}${options?.combining === false ? "_nocomb" : ""}${options?.liveStateCache ? "_kept" : ""}${
    options?.tracing ? "_traced" : ""
  }_${process.pid}`
  let runtime: ManagedRuntime.ManagedRuntime<EventStore.EventStore, unknown>
  let client: Layer.Layer<any, any, never>
  const run = <A, E>(effect: Effect.Effect<A, E, EventStore.EventStore>) => runtime.runPromise(effect)
  const command = (id: string) =>
    run(Session.run(Effect.gen(function*() {
      const stream = yield* Session.fetchForWriting(Counter, id)
      yield* stream.appendOne(one)
      yield* Session.saveChanges
    })))
  const withRetry = CommandHandler.make(Counter, {
    id: (id: string) => id,
    decide,
    retry: Schedule.forever
  })
  const exclusive = CommandHandler.make(Counter, {
    id: (id: string) => id,
    decide,
    exclusive: true,
    timeout: "30 seconds"
  })
  const contender: Contender & { readonly fetch: (id: string) => Promise<Option.Option<{ total: number }>> } = {
    name,
    setup: async (url) => {
      const pgUrl = new URL(url)
      client = PgClient.layer({ url: Redacted.make(pgUrl.toString()), maxConnections: poolSize, idleTimeout: "250 millis" })
      const setupSchema = Effect.gen(function*() {
        const sql = yield* (yield* Effect.promise(() => import("@effect/sql/SqlClient"))).SqlClient
        yield* sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      }).pipe(Effect.provide(client))
      await Effect.runPromise(setupSchema)
      runtime = ManagedRuntime.make(
        EventStorePg.layer({
          schema,
          writeCombining: options?.combining,
          readCombining: options?.combining,
          liveStateCache: options?.liveStateCache
        }).pipe(
          Layer.provide(Projections.layer(lifecycle === "Live" ? [] : [Projection.snapshot(Counter, lifecycle)])),
          Layer.provide(client),
          Layer.merge(options?.tracing ? tracingLayer() : Layer.empty)
        )
      )
      await runtime.runPromise(Effect.void)
    },
    teardown: async () => {
      await runtime.runPromise(Effect.gen(function*() {
        const sql = yield* (yield* Effect.promise(() => import("@effect/sql/SqlClient"))).SqlClient
        yield* sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      }).pipe(Effect.provide(client)))
      await runtime.dispose()
    },
    seed: async (ids, events) => {
      for (const id of ids) {
        for (let i = 0; i < events; i += 100) {
          const n = Math.min(100, events - i)
          await run(Session.run(Effect.zipRight(Session.append(Counter, id, Array.from({ length: n }, () => one)), Session.saveChanges)))
        }
      }
    },
    append: (id) => run(Session.run(Effect.zipRight(Session.append(Counter, id, [one]), Session.saveChanges))).then(() => {}),
    command: (id) => command(id),
    commandWithRetry: (id) => run(withRetry(id)).then(() => {}),
    commandExclusive: (id) => run(exclusive(id)).then(() => {}),
    isConflict: (e) => String(e).includes("ConcurrencyError"),
    fetch: (id) => run(Session.run(Effect.map(Session.fetchForWriting(Counter, id), (s) => s.aggregate)))
  }
  return contender
}
