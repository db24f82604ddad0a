/**
 * The orders HTTP API as data: endpoints, payloads and errors with their
 * statuses. Server (`examples/http-orders.ts`) and clients
 * (`HttpApiClient.make(OrdersApi, { baseUrl })`) share it, so a client needs
 * neither the store nor the handlers.
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { StreamId } from "effect-chronicle"

/** An order id: a valid stream id (not blank, at most 200 characters, no NUL), else 400. */
export const OrderId = Schema.String.pipe(
  Schema.filter((id) => StreamId.invalidReason(id) ?? true),
  Schema.annotations({ identifier: "OrderId" })
)

/** An item name. */
export const ItemName = Schema.Trimmed.pipe(Schema.nonEmptyString(), Schema.maxLength(100))

/** What `POST /orders` takes: the id the client chose and the items, each named once. */
export class CreateOrder extends Schema.Class<CreateOrder>("CreateOrder")({
  id: OrderId,
  items: Schema.NonEmptyArray(ItemName).pipe(
    Schema.filter((items) => new Set(items).size === items.length || "item names must be unique")
  )
}) {}

/** An order as the API shows it, with the version its ETag carries. */
export class OrderView extends Schema.Class<OrderView>("OrderView")({
  id: Schema.String,
  version: Schema.Int,
  items: Schema.Array(Schema.Struct({ name: Schema.String, ready: Schema.Boolean })),
  ready: Schema.Boolean,
  shipped: Schema.Boolean
}) {}

/**
 * A version in `If-Match`: the ETag this API sends (`"3"`), or a bare `3`.
 * Weak tags (`W/"3"`) never match a strong comparison, so they are rejected.
 */
export const Version = Schema.transformOrFail(Schema.String, Schema.NonNegativeInt, {
  strict: true,
  decode: (header, _options, ast) => {
    const match = /^\s*(?:"(\d{1,15})"|(\d{1,15}))\s*$/.exec(header)
    return match === null
      ? ParseResult.fail(new ParseResult.Type(ast, header, `expected a version such as "3", got ${header}`))
      : ParseResult.succeed(Number(match[1] ?? match[2]))
  },
  encode: (version) => ParseResult.succeed(`"${version}"`)
})

/** The headers a command takes. */
export const CommandHeaders = Schema.Struct({ "if-match": Schema.optional(Version) })

/** 409: the order moved past the version the command was decided on (a stale `If-Match` or a lost race). */
export class VersionConflict extends Schema.TaggedError<VersionConflict>()("VersionConflict", {
  orderId: Schema.String,
  expectedVersion: Schema.Number,
  currentVersion: Schema.Number
}, HttpApiSchema.annotations({ status: 409 })) {}

/** 409: `POST /orders` with an id already taken. */
export class OrderExists extends Schema.TaggedError<OrderExists>()("OrderExists", {
  orderId: Schema.String
}, HttpApiSchema.annotations({ status: 409 })) {}

/** 423: another writer held the order's lock past the exclusive command's time-out (with `Retry-After`). */
export class OrderLocked extends Schema.TaggedError<OrderLocked>()("OrderLocked", {
  orderId: Schema.String,
  timeoutMillis: Schema.Number
}, HttpApiSchema.annotations({ status: 423 })) {}

/** 422: the domain rejected the command; `reason` says why. */
export class CommandRejected extends Schema.TaggedError<CommandRejected>()("CommandRejected", {
  orderId: Schema.String,
  reason: Schema.String
}, HttpApiSchema.annotations({ status: 422 })) {}

/** 404: no order with that id. */
export class OrderNotFound extends Schema.TaggedError<OrderNotFound>()("OrderNotFound", {
  orderId: Schema.String
}, HttpApiSchema.annotations({ status: 404 })) {}

const OrderPath = Schema.Struct({ id: OrderId })

/** The `orders` endpoints. */
export class OrdersGroup extends HttpApiGroup.make("orders")
  .add(
    HttpApiEndpoint.post("create", "/orders")
      .setPayload(CreateOrder)
      .addSuccess(OrderView, { status: 201 })
      .addError(OrderExists)
  )
  .add(
    HttpApiEndpoint.get("get", "/orders/:id")
      .setPath(OrderPath)
      .addSuccess(OrderView)
      .addError(OrderNotFound)
  )
  .add(
    HttpApiEndpoint.post("markItemReady", "/orders/:id/items/:name/ready")
      .setPath(Schema.Struct({ id: OrderId, name: ItemName }))
      .setHeaders(CommandHeaders)
      .addSuccess(OrderView)
      .addError(OrderNotFound)
      .addError(CommandRejected)
      .addError(VersionConflict)
  )
  .add(
    HttpApiEndpoint.post("ship", "/orders/:id/ship")
      .setPath(OrderPath)
      .setHeaders(CommandHeaders)
      .addSuccess(OrderView)
      .addError(OrderNotFound)
      .addError(CommandRejected)
      .addError(VersionConflict)
      .addError(OrderLocked)
  )
{}

/** The orders API. */
export class OrdersApi extends HttpApi.make("orders").add(OrdersGroup) {}
