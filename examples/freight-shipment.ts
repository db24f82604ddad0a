/**
 * The FreightShipment aggregate and its PickUp handler with a retry policy:
 * a conflicting concurrent write re-runs fetch-decide-save, as the schedule allows.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { Aggregate, CommandHandler } from "effect-chronicle"

export class ShipmentScheduled extends Schema.TaggedClass<ShipmentScheduled>()("ShipmentScheduled", {
  origin: Schema.String,
  destination: Schema.String
}) {}
export class ShipmentPickedUp extends Schema.TaggedClass<ShipmentPickedUp>()("ShipmentPickedUp", {
  at: Schema.DateFromString
}) {}
export class ShipmentDelivered extends Schema.TaggedClass<ShipmentDelivered>()("ShipmentDelivered", {
  at: Schema.DateFromString
}) {}
export class ShipmentCancelled extends Schema.TaggedClass<ShipmentCancelled>()("ShipmentCancelled", {
  reason: Schema.String
}) {}
export const ShipmentEvent = Schema.Union(ShipmentScheduled, ShipmentPickedUp, ShipmentDelivered, ShipmentCancelled)
export type ShipmentEvent = typeof ShipmentEvent.Type

export const ShipmentStatus = Schema.Literal("Scheduled", "InTransit", "Delivered", "Cancelled")
export const FreightShipmentState = Schema.Struct({
  origin: Schema.String,
  destination: Schema.String,
  status: ShipmentStatus,
  pickedUpAt: Schema.optional(Schema.DateFromString)
})
export type FreightShipmentState = typeof FreightShipmentState.Type

export const FreightShipment = Aggregate.make({
  name: "FreightShipment",
  events: ShipmentEvent,
  state: FreightShipmentState,
  initial: { origin: "", destination: "", status: "Scheduled" } as FreightShipmentState,
  evolve: (state, event): FreightShipmentState => {
    switch (event._tag) {
      case "ShipmentScheduled":
        return { origin: event.origin, destination: event.destination, status: "Scheduled" }
      case "ShipmentPickedUp":
        return { ...state, status: "InTransit", pickedUpAt: event.at }
      case "ShipmentDelivered":
        return { ...state, status: "Delivered" }
      case "ShipmentCancelled":
        return { ...state, status: "Cancelled" }
    }
  }
})

export interface PickUp {
  readonly shipmentId: string
  readonly at: Date
}

export class CannotPickUp extends Schema.TaggedError<CannotPickUp>()("CannotPickUp", {
  shipmentId: Schema.String,
  status: Schema.String
}) {}

/** Up to 5 retries on conflict, with a little jittered back-off. */
export const pickUpRetry = Schedule.exponential("5 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(5)))

export const PickUpHandler = CommandHandler.make(FreightShipment, {
  id: (command: PickUp) => command.shipmentId,
  decide: (command, state) => {
    const status = Option.match(state, { onNone: () => "None", onSome: (s) => s.status })
    return status === "Scheduled"
      ? Effect.succeed([new ShipmentPickedUp({ at: command.at })])
      : Effect.fail(new CannotPickUp({ shipmentId: command.shipmentId, status }))
  },
  retry: pickUpRetry
})
