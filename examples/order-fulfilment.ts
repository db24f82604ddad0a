/**
 * Order fulfilment, end to end: `npm start` runs this on an embedded PostgreSQL
 * (or on `DATABASE_URL`). It creates an order, marks items ready through the
 * four handler forms, shows a stale command rejected, a conflict that a retry
 * resolves, a lock that times out, and prints the stream.
 */
import { PgClient } from "@effect/sql-pg"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import { EventStore, EventStorePg, Projection, Projections, Session } from "effect-chronicle"
import {
  createOrder,
  decideMarkItemReady,
  ItemReady,
  markItemReady,
  markItemReadyAtVersion,
  markItemReadyExclusively,
  markItemReadyWithWriteToAggregate,
  Order,
  OrderShipped
} from "./order.js"
import { databaseUrl, runMain } from "./postgres.js"

const describe = (state: Option.Option<typeof Order.initial>) =>
  Option.match(state, {
    onNone: () => "(no order)",
    onSome: (o) =>
      `${o.items.map((i) => `${i.name}${i.ready ? "✓" : "…"}`).join(" ")}${o.ready ? " | ready" : ""}${
        o.shipped ? " | shipped" : ""
      }`
  })

/** The story; needs only an `EventStore`, so the tests run it on both stores. */
export const program = Effect.gen(function*() {
  const orderId = `order-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
  const log: Array<string> = []
  const say = (line: string) => Effect.zipRight(Effect.sync(() => log.push(line)), Console.log(line))

  yield* createOrder(orderId, ["kettle", "teapot", "cups", "saucers"])
  yield* say(`1. started ${orderId}: ${describe(yield* Session.run(Session.fetchLatest(Order, orderId)))}`)

  yield* markItemReady({ orderId, itemName: "kettle" })
  yield* say(`2. kettle ready (fetchForWriting): version 2`)

  // A client that saw version 1 is too late: rejected at fetch, nothing written.
  const stale = yield* Effect.flip(markItemReadyAtVersion({ orderId, itemName: "teapot", version: 1 }))
  yield* say(`3. stale command rejected: ${stale._tag} (expected ${(stale as any).expectedVersion}, actual ${(stale as any).actualVersion})`)
  yield* markItemReadyAtVersion({ orderId, itemName: "teapot", version: 2 })
  yield* say(`4. teapot ready (expected version 2): version 3`)

  // A concurrent writer slips in between our fetch and our save: the save
  // conflicts, and the retry schedule re-runs fetch-decide-save.
  const attempts = yield* Ref.make(0)
  const result = yield* EventStore.writeToAggregate(
    Order,
    orderId,
    (stream) =>
      Effect.gen(function*() {
        const attempt = yield* Ref.updateAndGet(attempts, (n) => n + 1)
        if (attempt === 1) {
          yield* Session.run(Effect.zipRight(
            Session.append(Order, orderId, [new ItemReady({ name: "saucers" })]),
            Session.saveChanges
          ))
          yield* say(`5. attempt 1 fetched version ${stream.version}; another writer marked saucers ready meanwhile`)
        } else {
          yield* say(`6. attempt ${attempt} fetched version ${stream.version} and decides again`)
        }
        yield* Effect.flatMap(decideMarkItemReady({ orderId, itemName: "cups" }, stream.aggregate), stream.appendMany)
      }),
    { retry: Schedule.recurs(3) }
  )
  yield* say(`7. cups ready after ${yield* Ref.get(attempts)} attempts: version ${result.version}, ${describe(result.state)}`)

  // One session holds the stream's lock; another gives up after its time-out.
  const locked = yield* Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForExclusiveWriting(Order, orderId)
    const blocked = yield* Effect.flip(
      Session.run(Session.fetchForExclusiveWriting(Order, orderId, { timeout: "300 millis" }))
    )
    yield* stream.appendOne(new OrderShipped())
    yield* Session.saveChanges
    return blocked
  }))
  yield* say(`8. a second exclusive fetch timed out: ${locked._tag} after ${(locked as any).timeoutMillis} ms; the holder shipped the order`)

  // The other three handler forms, on a second order.
  const second = `${orderId}-b`
  yield* createOrder(second, ["mug", "spoon", "tray"])
  yield* markItemReadyExclusively({ orderId: second, itemName: "mug" })
  yield* markItemReadyWithWriteToAggregate({ orderId: second, itemName: "spoon" })
  const last = yield* EventStore.writeToAggregate(Order, second, (stream) =>
    Effect.zipRight(stream.appendOne(new ItemReady({ name: "tray" })), stream.appendOne(new OrderShipped())))
  yield* say(`9. second order via exclusive and writeToAggregate: ${describe(last.state)}`)

  const events = yield* Session.run(Session.readStream(orderId))
  yield* say(`10. ${orderId} holds ${events.length} events: ${events.map((e) => `${e.version}:${e.type}`).join(", ")}`)
  return { orderId, log, finalState: yield* Session.run(Session.fetchLatest(Order, orderId)), attempts: yield* Ref.get(attempts) }
})

/** The PostgreSQL wiring of the contract: store, registry, client. */
export const storeLayer = (url: string) =>
  EventStorePg.layer({ schema: "chronicle" }).pipe(
    Layer.provideMerge(Projections.layer([Projection.snapshot(Order, "Live")])),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )

const main = Effect.gen(function*() {
  const { url, embedded } = yield* databaseUrl
  yield* Console.log(embedded ? "Using an embedded PostgreSQL (set DATABASE_URL to use a server)" : "Using DATABASE_URL")
  yield* Effect.provide(program, storeLayer(url))
}).pipe(Effect.scoped)

runMain(import.meta.url, main)
