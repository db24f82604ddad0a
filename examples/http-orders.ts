/**
 * The order commands of the order-fulfilment story served over HTTP with
 * `@effect/platform`'s `HttpApi`, on `@effect/platform-node`.
 *
 *   POST /orders                          create          201 | 409 exists | 400
 *   GET  /orders/:id                      state + version 200 (ETag) | 404
 *   POST /orders/:id/items/:name/ready    mark ready      200 (ETag) | 404 | 409 | 422
 *   POST /orders/:id/ship                 ship, exclusive 200 (ETag) | 404 | 409 | 422 | 423
 *
 * Commands take `If-Match: "<version>"` (the ETag the client saw). With it, a
 * stale version or a race lost to another writer answers 409 with the current
 * version, and nothing is retried: the client decides again on what it has not
 * seen. Without it, the handler retries conflicts on the fresh state.
 *
 * Run it with `npx tsx examples/http-orders.ts` (embedded PostgreSQL, or
 * `DATABASE_URL`; `CHRONICLE_STORE=memory` for the in-memory store; `PORT`,
 * default 3000). The tests start `layer` on port 0 on both stores.
 */
import { HttpApiBuilder, HttpApp, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { createServer } from "node:http"
import {
  type ConcurrencyError,
  CommandHandler,
  EventStore,
  EventStoreMemory,
  EventStorePg,
  Projection,
  Projections,
  Session,
  StreamId,
  type StreamLockedError
} from "effect-chronicle"
import {
  CommandRejected,
  OrderExists,
  OrderLocked,
  OrderNotFound,
  OrdersApi,
  OrderView,
  VersionConflict
} from "./http-orders-api.js"
import * as Domain from "./order.js"
import { databaseUrl } from "./postgres.js"

export * from "./http-orders-api.js"

/** Shipping needs every item ready. */
export class OrderNotReady extends Schema.TaggedError<OrderNotReady>()("OrderNotReady", {
  orderId: Schema.String,
  pending: Schema.Array(Schema.String)
}) {}

/** The command: ship an order (`version`: the order version the client saw). */
export interface Ship {
  readonly orderId: string
  readonly version?: number | undefined
}

/** The decision, pure: shipping a shipped order again is a no-op. */
export const decideShip = (
  command: Ship,
  state: Option.Option<Domain.OrderState>
): Effect.Effect<ReadonlyArray<Domain.OrderEvent>, Domain.OrderNotFound | OrderNotReady> =>
  Effect.gen(function*() {
    if (Option.isNone(state)) return yield* new Domain.OrderNotFound({ orderId: command.orderId })
    const order = state.value
    if (order.shipped) return []
    if (!order.ready) {
      const pending = order.items.filter((item) => !item.ready).map((item) => item.name)
      return yield* new OrderNotReady({ orderId: command.orderId, pending })
    }
    return [new Domain.OrderShipped()]
  })

/** How the server handles commands. */
export interface Options {
  /** Lock time-out of the exclusive command (ship); default 2 seconds. */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /** Retries of a command sent without `If-Match`; default 10, jittered back-off from 5 ms capped at 50 ms. */
  readonly retry?: Schedule.Schedule<any, any> | undefined
}

const defaultRetry = Schedule.exponential("5 millis").pipe(
  Schedule.jittered,
  Schedule.either(Schedule.spaced("50 millis")),
  Schedule.intersect(Schedule.recurs(10))
)

/** The strong ETag of a version, as `If-Match` sends it back. */
export const etagOf = (version: number) => `"${version}"`

const setHeaders = (headers: Record<string, string>) =>
  HttpApp.appendPreResponseHandler((_request, response) => Effect.succeed(HttpServerResponse.setHeaders(response, headers)))

const respond = (id: string, version: number, state: Option.Option<Domain.OrderState>) =>
  Option.match(state, {
    onNone: () => Effect.fail(new OrderNotFound({ orderId: id })),
    onSome: (order) =>
      Effect.as(
        setHeaders({ etag: etagOf(version) }),
        new OrderView({
          id,
          version,
          items: order.items.map(({ name, ready }) => ({ name, ready })),
          ready: order.ready,
          shipped: order.shipped
        })
      )
  })

/** The API's error for each error of the store or the domain (`never`: a defect, answered 500). */
type Wire<E> = E extends ConcurrencyError ? VersionConflict
  : E extends StreamLockedError ? OrderLocked
  : E extends Domain.OrderNotFound | OrderNotFound ? OrderNotFound
  : E extends Domain.UnknownItem | OrderNotReady | CommandRejected ? CommandRejected
  : E extends OrderExists ? OrderExists
  : never

/**
 * Store and domain failures as the API's errors. A conflict carries the
 * current version (body and ETag) so the client can fetch and decide again;
 * storage failures are defects, answered 500.
 */
const answer = <A, E, R>(orderId: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, Wire<E>, R> =>
  Effect.catchAll(effect, (error): Effect.Effect<never, unknown> => {
    const e = error as
      | ConcurrencyError
      | StreamLockedError
      | Domain.OrderNotFound
      | Domain.UnknownItem
      | OrderNotReady
      | { readonly _tag: "other" }
    switch (e._tag) {
      case "ConcurrencyError":
        return Effect.zipRight(
          setHeaders({ etag: etagOf(e.actualVersion) }),
          Effect.fail(new VersionConflict({ orderId, expectedVersion: e.expectedVersion, currentVersion: e.actualVersion }))
        )
      case "StreamLockedError":
        return Effect.zipRight(
          setHeaders({ "retry-after": String(Math.max(1, Math.ceil(e.timeoutMillis / 1000))) }),
          Effect.fail(new OrderLocked({ orderId, timeoutMillis: e.timeoutMillis }))
        )
      case "OrderNotFound":
        return Effect.fail(new OrderNotFound({ orderId }))
      case "UnknownItem":
        return Effect.fail(new CommandRejected({ orderId, reason: `the order has no item "${e.itemName}"` }))
      case "OrderNotReady":
        return Effect.fail(new CommandRejected({ orderId, reason: `items not ready: ${e.pending.join(", ")}` }))
      default:
        // Already an API error (OrderExists, CommandRejected) goes out as it is; anything else is a defect.
        return error instanceof OrderExists || error instanceof CommandRejected ? Effect.fail(error) : Effect.die(error)
    }
  }) as Effect.Effect<A, Wire<E>, R>

/** Turns an error the options make impossible into a defect, and out of the type. */
const impossible = <T extends string>(tag: T) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, Exclude<E, { readonly _tag: T }>, R> =>
  Effect.catchAll(effect, (error) => (error as { _tag?: unknown })?._tag === tag ? Effect.die(error) : Effect.fail(error)) as any

// Without an expected version a fetch cannot conflict, and a new stream's conflict is StreamExistsError.
const noConflict = impossible("ConcurrencyError")
// Only an exclusive fetch waits for a lock.
const notLocked = impossible("StreamLockedError")

/** The command handlers: with `If-Match` one attempt at that version, without it retried. */
const commands = (options: Options | undefined) => {
  const retry = options?.retry ?? defaultRetry
  const timeout = options?.lockTimeout ?? "2 seconds"
  const mark = {
    retried: CommandHandler.make(Domain.Order, {
      id: (command: Domain.MarkItemReady) => command.orderId,
      decide: Domain.decideMarkItemReady,
      retry
    }),
    // No retry: a retry would fetch the newer version and decide past what the client saw.
    atVersion: CommandHandler.make(Domain.Order, {
      id: (command: Domain.MarkItemReady) => command.orderId,
      expectedVersion: (command) => command.version,
      decide: Domain.decideMarkItemReady
    })
  }
  // Exclusive: the lock serialises writers, so there is nothing to retry; a busy stream answers 423.
  const ship = CommandHandler.make(Domain.Order, {
    id: (command: Ship) => command.orderId,
    expectedVersion: (command) => command.version,
    decide: decideShip,
    exclusive: true,
    timeout
  })
  return {
    markItemReady: (command: Domain.MarkItemReady) =>
      command.version === undefined ? mark.retried(command) : mark.atVersion(command),
    ship
  }
}

/** The handlers of the `orders` group; needs the `EventStore`. */
export const OrdersLive = (options?: Options) =>
  HttpApiBuilder.group(OrdersApi, "orders", (handlers) => {
    const handle = commands(options)
    return handlers
      .handle("create", ({ payload }) =>
        answer(
          payload.id,
          Session.run(Effect.gen(function*() {
            yield* Session.startStream(Domain.Order, payload.id, [
              new Domain.OrderCreated({ items: payload.items.map((name) => new Domain.Item({ name, ready: false })) })
            ])
            const saved = yield* Session.saveChanges
            // After the save the session knows the state: no second read.
            const state = yield* Session.fetchLatest(Domain.Order, payload.id)
            return yield* respond(payload.id, saved.streams[0].version, state)
          })).pipe(
            Effect.catchTag("StreamExistsError", () => Effect.fail(new OrderExists({ orderId: payload.id }))),
            noConflict,
            impossible("OrderNotFound") // the state of the order just saved
          )
        ))
      .handle("get", ({ path }) =>
        answer(
          path.id,
          // The fetch gives state and version; nothing is appended or saved.
          Session.run(Effect.flatMap(
            Session.fetchForWriting(Domain.Order, path.id),
            (stream) => respond(path.id, stream.version, stream.aggregate)
          )).pipe(noConflict)
        ))
      .handle("markItemReady", ({ headers, path }) =>
        answer(
          path.id,
          Effect.flatMap(
            notLocked(handle.markItemReady({ orderId: path.id, itemName: path.name, version: headers["if-match"] })),
            (result) => respond(path.id, result.version, result.state)
          )
        ))
      .handle("ship", ({ headers, path }) =>
        answer(
          path.id,
          Effect.flatMap(
            handle.ship({ orderId: path.id, version: headers["if-match"] }),
            (result) => respond(path.id, result.version, result.state)
          )
        ))
  })

/** The API with its handlers; needs the `EventStore`. */
export const ApiLive = (options?: Options) => HttpApiBuilder.api(OrdersApi).pipe(Layer.provide(OrdersLive(options)))

/** The server on `port` (0: any free one; ask `HttpServer.HttpServer` for its address); needs the `EventStore`. */
export const layer = (options: Options & { readonly port: number }) =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(ApiLive(options)),
    // The router drops a path parameter over 100 characters as "no route" (404): let ids of
    // up to 200 through, and a little over, so the id's own validation answers 400 with the reason.
    Layer.provide(HttpRouter.setRouterConfig({ maxParamLength: 5 * StreamId.maxLength })),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: options.port }))
  )

/** The store the main runs on: in memory with `CHRONICLE_STORE=memory`, else PostgreSQL. */
const storeLayer: Layer.Layer<EventStore.EventStore, unknown> = Layer.unwrapScoped(Effect.gen(function*() {
  const registry = Projections.layer([Projection.snapshot(Domain.Order, "Inline")])
  if (process.env.CHRONICLE_STORE === "memory") {
    yield* Console.log("Using the in-memory store")
    return EventStoreMemory.layer.pipe(Layer.provide(registry))
  }
  const { url, embedded } = yield* databaseUrl
  yield* Console.log(embedded ? "Using an embedded PostgreSQL (set DATABASE_URL to use a server)" : "Using DATABASE_URL")
  return EventStorePg.layer({ schema: process.env.CHRONICLE_SCHEMA ?? "chronicle" }).pipe(
    Layer.provide(registry),
    Layer.provide(PgClient.layer({ url: Redacted.make(url) }))
  )
}))

/** Serves until SIGINT/SIGTERM, then closes the server and the store (and the embedded PostgreSQL). */
export const main = Effect.provide(
  Effect.gen(function*() {
    const address = yield* HttpServer.addressFormattedWith((address) => Effect.succeed(address))
    yield* Console.log(`Orders API listening on ${address}`)
    return yield* Effect.never
  }),
  layer({ port: Number(process.env.PORT ?? 3000) }).pipe(Layer.provide(storeLayer))
)

if (import.meta.url === `file://${process.argv[1]}`) NodeRuntime.runMain(main)
