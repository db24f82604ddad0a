/**
 * Projections: the Order aggregate kept as an Inline snapshot (written in the
 * append transaction), a daily view across all orders kept Async by the
 * projection daemon, and a rebuild of that view drawn as a progress bar.
 *
 *   npm run example:projections
 */
import { PgClient } from "@effect/sql-pg"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { EventStorePg, Projection, ProjectionDaemon, Projections, Session } from "effect-chronicle"
import { createOrder, markItemReady, Order, OrderCreated } from "./order.js"
import { databaseUrl, runMain } from "./postgres.js"

/** The Order state, kept per stream in the same transaction as its events. */
export const OrderSnapshot = Projection.snapshot(Order, "Inline")

/** Orders and items per day, across every order stream, kept by the daemon. */
export const DailyOrders = Projection.multiStream({
  name: "DailyOrders",
  events: OrderCreated,
  state: Schema.Struct({ orders: Schema.Number, items: Schema.Number }),
  initial: { orders: 0, items: 0 },
  key: (envelope) => envelope.timestamp.toISOString().slice(0, 10),
  evolve: (day, event) => ({ orders: day.orders + 1, items: day.items + event.items.length }),
  lifecycle: "Async"
})

export const registrations = [OrderSnapshot, DailyOrders]

const bar = (processed: number, total: number) => {
  const width = 30
  const filled = total === 0 ? width : Math.round((processed / total) * width)
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${processed}/${total}`
}

/** The story; needs an `EventStore` with `registrations` and a `ProjectionDaemon`. */
export const program = Effect.gen(function*() {
  const run = Math.random().toString(36).slice(2, 8)
  const orders = Array.from({ length: 5 }, (_, i) => `order-${run}-${i}`)
  for (const id of orders) yield* createOrder(id, ["kettle", "cups"])
  yield* markItemReady({ orderId: orders[0], itemName: "kettle" })

  // Inline: the snapshot is already there, equal to a fold of the events.
  const snapshot = yield* Session.run(Session.loadDocument(OrderSnapshot, orders[0]))
  const folded = yield* Session.run(Session.aggregateStream(Order, orders[0]))
  yield* Console.log(`Inline snapshot of ${orders[0]}: ${JSON.stringify(Option.getOrNull(snapshot))}`)
  yield* Console.log(`  equal to the fold of its events: ${JSON.stringify(snapshot) === JSON.stringify(folded)}`)

  // Async: the daemon catches up in the background.
  yield* ProjectionDaemon.waitForNonStale({ timeout: "30 seconds" })
  const day = (yield* Session.run(Session.readStream(orders[0])))[0].timestamp.toISOString().slice(0, 10)
  const daily = Option.getOrThrow(yield* Session.run(Session.loadDocument(DailyOrders, day)))
  yield* Console.log(`Async view for ${day}: ${daily.orders} orders, ${daily.items} items`)
  for (const s of yield* ProjectionDaemon.status) {
    yield* Console.log(`  ${s.name} v${s.version}: checkpoint ${s.checkpoint}, head ${s.head}, lag ${s.lag}`)
  }

  // Rebuild the view from the start, drawing its progress.
  const progress = yield* ProjectionDaemon.rebuild(DailyOrders).pipe(
    Stream.tap(({ processed, total }) => Console.log(`  rebuild ${bar(processed, total)}`)),
    Stream.runLast
  )
  const rebuilt = Option.getOrThrow(yield* Session.run(Session.loadDocument(DailyOrders, day)))
  yield* Console.log(`Rebuilt: ${rebuilt.orders} orders, ${rebuilt.items} items`)
  return { orders, snapshot, folded, daily, rebuilt, progress }
})

const main = Effect.gen(function*() {
  const { url } = yield* databaseUrl
  const App = ProjectionDaemon.layer().pipe(
    Layer.provideMerge(EventStorePg.layer({ schema: "chronicle" })),
    Layer.provideMerge(Projections.layer(registrations)),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )
  yield* Effect.provide(program, App)
}).pipe(Effect.scoped)

runMain(import.meta.url, main)
