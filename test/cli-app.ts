/**
 * The registrations of the test application's bin (test/cli-bin.ts), also
 * used by the tests' own store: the example Order kept as an Inline
 * snapshot, a daily view of orders kept Async, and a subscription.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { Projection, Subscription } from "effect-chronicle"
import { Order, OrderCreated } from "../examples/order.js"

// The same projections as examples/projections.ts, defined again: the bin is bundled,
// and in a bundle that example's runMain would take the bundle for itself and run.
export const OrderSnapshot = Projection.snapshot(Order, "Inline")

export const DailyOrders = Projection.multiStream({
  name: "DailyOrders",
  events: OrderCreated,
  state: Schema.Struct({ orders: Schema.Number, items: Schema.Number }),
  initial: { orders: 0, items: 0 },
  key: (envelope) => envelope.timestamp.toISOString().slice(0, 10),
  evolve: (day, event) => ({ orders: day.orders + 1, items: day.items + event.items.length }),
  lifecycle: "Async"
})

export const Audit = Subscription.make({ name: "cli-audit", events: OrderCreated, handle: () => Effect.void })

export const registrations = [OrderSnapshot, DailyOrders, Audit] as const
