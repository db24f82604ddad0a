/**
 * The order-fulfilment story traced with OpenTelemetry: `@effect/opentelemetry`
 * over the SDK's in-memory exporter, then the span tree of one command printed.
 * In production the exporter is OTLP (see the README's "Tracing and metrics").
 *
 * Run it with `npx tsx examples/tracing.ts` (embedded PostgreSQL or
 * `DATABASE_URL`); the tests run `program` on both stores.
 */
import * as Resource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { PgClient } from "@effect/sql-pg"
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { EventStore, EventStorePg, Projections, Session } from "effect-chronicle"
import { createOrder, ItemReady, Order } from "./order.js"
import { databaseUrl, runMain } from "./postgres.js"

/** Tracing to an in-memory exporter: the layer, and what it exported. */
export const inMemoryTracing = () => {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const layer = OtelTracer.layer.pipe(
    Layer.provide(Layer.succeed(OtelTracer.OtelTracerProvider, provider)),
    Layer.provide(Resource.layer({ serviceName: "order-fulfilment" }))
  )
  return { layer, spans: () => exporter.getFinishedSpans() }
}

/** The spans under `root`, indented, with their chronicle attributes. */
export const tree = (spans: ReadonlyArray<ReadableSpan>, root: ReadableSpan): Array<string> => {
  const lines: Array<string> = []
  const walk = (span: ReadableSpan, depth: number) => {
    const attributes = Object.entries(span.attributes)
      .filter(([key]) => key.startsWith("chronicle.") && key !== "chronicle.tenant")
      .map(([key, value]) => `${key.slice(10)}=${value}`)
    const failed = span.attributes["error.type"] === undefined ? "" : ` FAILED ${span.attributes["error.type"]}`
    lines.push(`${"  ".repeat(depth)}${span.name}${attributes.length > 0 ? ` (${attributes.join(", ")})` : ""}${failed}`)
    spans
      .filter((s) => s.parentSpanContext?.spanId === span.spanContext().spanId)
      .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])
      .forEach((child) => walk(child, depth + 1))
  }
  walk(root, 0)
  return lines
}

/**
 * One command that conflicts once and succeeds on its retry, traced; returns
 * the printed tree. Needs an `EventStore` (either store).
 */
export const program = Effect.gen(function*() {
  const orderId = `order-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
  yield* createOrder(orderId, ["kettle", "teapot"])
  const tracing = inMemoryTracing()
  let tries = 0
  yield* EventStore.writeToAggregate(Order, orderId, (stream) =>
    Effect.gen(function*() {
      // Another writer slips in before the first try saves: that try conflicts, the retry succeeds.
      if (++tries === 1) {
        yield* Session.run(Effect.zipRight(Session.append(Order, orderId, [new ItemReady({ name: "teapot" })]), Session.saveChanges))
      }
      yield* stream.appendOne(new ItemReady({ name: "kettle" }))
    }), { retry: Schedule.recurs(2) }).pipe(Effect.provide(tracing.layer))
  const spans = tracing.spans()
  const root = spans.find((s) => s.name === "chronicle.command")!
  const lines = tree(spans, root)
  for (const line of lines) yield* Console.log(line)
  return { lines, spans: spans.length }
})

const main = Effect.gen(function*() {
  const { url } = yield* databaseUrl
  yield* Effect.provide(
    program,
    EventStorePg.layer({ schema: "chronicle" }).pipe(
      Layer.provideMerge(Projections.layer([])),
      Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
    )
  )
}).pipe(Effect.scoped)

runMain(import.meta.url, main)
