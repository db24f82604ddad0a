/**
 * The Order aggregate and its MarkItemReady handler in four forms, after the
 * command-handler workflow of Marten's and Wolverine's documentation.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { Aggregate, CommandHandler, EventStore, Session } from "effect-chronicle"

export class Item extends Schema.Class<Item>("Item")({ name: Schema.String, ready: Schema.Boolean }) {}

export class OrderCreated extends Schema.TaggedClass<OrderCreated>()("OrderCreated", { items: Schema.Array(Item) }) {}
export class ItemReady extends Schema.TaggedClass<ItemReady>()("ItemReady", { name: Schema.String }) {}
export class OrderReady extends Schema.TaggedClass<OrderReady>()("OrderReady", {}) {}
export class OrderShipped extends Schema.TaggedClass<OrderShipped>()("OrderShipped", {}) {}
export const OrderEvent = Schema.Union(OrderCreated, ItemReady, OrderReady, OrderShipped)
export type OrderEvent = typeof OrderEvent.Type

export const OrderState = Schema.Struct({
  items: Schema.Array(Item),
  ready: Schema.Boolean,
  shipped: Schema.Boolean
})
export type OrderState = typeof OrderState.Type

const emptyOrder: OrderState = { items: [], ready: false, shipped: false }

export const Order = Aggregate.make({
  name: "Order",
  events: OrderEvent,
  state: OrderState,
  initial: emptyOrder,
  // Pure: each event yields a new state; nothing is mutated.
  evolve: (state, event): OrderState => {
    switch (event._tag) {
      case "OrderCreated":
        return { ...state, items: event.items }
      case "ItemReady":
        return {
          ...state,
          items: state.items.map((item) => item.name === event.name ? new Item({ name: item.name, ready: true }) : item)
        }
      case "OrderReady":
        return { ...state, ready: true }
      case "OrderShipped":
        return { ...state, shipped: true }
    }
  }
})

/** The command: mark one item of an order ready (`version`: the order version the client saw). */
export interface MarkItemReady {
  readonly orderId: string
  readonly itemName: string
  readonly version?: number
}

/** Rejections of MarkItemReady. */
export class UnknownItem extends Schema.TaggedError<UnknownItem>()("UnknownItem", {
  orderId: Schema.String,
  itemName: Schema.String
}) {}
export class OrderNotFound extends Schema.TaggedError<OrderNotFound>()("OrderNotFound", { orderId: Schema.String }) {}

/** The decision, pure: which events marking the item ready produces. */
export const decideMarkItemReady = (
  command: MarkItemReady,
  state: Option.Option<OrderState>
): Effect.Effect<ReadonlyArray<OrderEvent>, UnknownItem | OrderNotFound> =>
  Effect.gen(function*() {
    if (Option.isNone(state)) return yield* new OrderNotFound({ orderId: command.orderId })
    const order = state.value
    const item = order.items.find((i) => i.name === command.itemName)
    if (item === undefined) return yield* new UnknownItem({ orderId: command.orderId, itemName: command.itemName })
    if (item.ready) return []
    const events: Array<OrderEvent> = [new ItemReady({ name: command.itemName })]
    const allReady = order.items.every((i) => i.ready || i.name === command.itemName)
    if (allReady) events.push(new OrderReady())
    return events
  })

const markOn = (command: MarkItemReady, stream: Session.EventStream<OrderState, OrderEvent>) =>
  Effect.flatMap(decideMarkItemReady(command, stream.aggregate), (events) => stream.appendMany(events))

/** Form 1: fetch for writing, decide, append, save. A concurrent write makes the save fail. */
export const markItemReady = (command: MarkItemReady) =>
  Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForWriting(Order, command.orderId)
    yield* markOn(command, stream)
    return yield* Session.saveChanges
  }))

/** Form 2: the command carries the version the client saw; a stale command fails at fetch. */
export const markItemReadyAtVersion = (command: MarkItemReady) =>
  Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForWriting(Order, command.orderId, { expectedVersion: command.version })
    yield* markOn(command, stream)
    return yield* Session.saveChanges
  }))

/** Form 3: hold the stream's lock from fetch to save, so no other writer can interleave. */
export const markItemReadyExclusively = (command: MarkItemReady) =>
  Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForExclusiveWriting(Order, command.orderId, { timeout: "2 seconds" })
    yield* markOn(command, stream)
    return yield* Session.saveChanges
  }))

/** Form 4: `writeToAggregate` does fetch and save; the function only decides. */
export const markItemReadyWithWriteToAggregate = (command: MarkItemReady) =>
  EventStore.writeToAggregate(Order, command.orderId, (stream) => markOn(command, stream), {
    expectedVersion: command.version
  })

/** And as a decider-style handler that retries on conflicts, with jittered back-off. */
export const MarkItemReadyHandler = CommandHandler.make(Order, {
  id: (command: MarkItemReady) => command.orderId,
  decide: decideMarkItemReady,
  retry: Schedule.spaced("2 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(20)))
})

/** Starts an order with the given items. */
export const createOrder = (orderId: string, items: ReadonlyArray<string>) =>
  Session.run(Effect.gen(function*() {
    yield* Session.startStream(Order, orderId, [
      new OrderCreated({ items: items.map((name) => new Item({ name, ready: false })) })
    ])
    return yield* Session.saveChanges
  }))
