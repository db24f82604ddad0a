/**
 * A test application's own bin: the command line with the projections
 * example's registrations (an Inline snapshot, an Async daily view) and a
 * subscription, as `ChronicleCli.run` gives an application.
 */
import * as Effect from "effect/Effect"
import { Subscription } from "effect-chronicle"
import { DailyOrders, OrderSnapshot } from "../examples/projections.js"
import { OrderCreated } from "../examples/order.js"
import * as ChronicleCli from "../src/ChronicleCli.js"

export const Audit = Subscription.make({ name: "cli-audit", events: OrderCreated, handle: () => Effect.void })

ChronicleCli.run({ name: "orders-cli", registrations: [OrderSnapshot, DailyOrders, Audit], daemon: { pollInterval: "100 millis" } })
