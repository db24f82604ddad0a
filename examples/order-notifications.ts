/**
 * The consumer side of order fulfilment: two subscriptions the projection
 * daemon runs.
 *
 * - `notify-customer` e-mails the customer when an order ships. Delivery is
 *   at least once, so the handler is idempotent: it keys each mail by the
 *   envelope's global `sequence` and never sends a key twice. The fake mailer
 *   loses its answer once after sending (the handler fails, the retry finds
 *   the mail already sent), and refuses one customer's address for good: that
 *   event becomes a dead letter, and later orders are still notified.
 * - `publish-integration-events` is an outbox: it publishes what other
 *   services need (`order.ready`, `order.shipped`) to a queue.
 *
 * Run it with `npx tsx examples/order-notifications.ts` (embedded PostgreSQL
 * or `DATABASE_URL`); the tests run `program` on both stores.
 */
import { PgClient } from "@effect/sql-pg"
import type * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { EventStorePg, ProjectionDaemon, Projections, Session, Subscription } from "effect-chronicle"
import { createOrder, ItemReady, Order, OrderReady, OrderShipped } from "./order.js"
import { databaseUrl, runMain } from "./postgres.js"

/** A mail the mailer refused, or whose answer it lost. */
export class MailError extends Schema.TaggedError<MailError>()("MailError", { reason: Schema.String }) {}

/** What the notification handler needs of a mailer. */
export interface MailerShape {
  /** Sends unless a mail with this idempotency key was sent already. */
  readonly send: (mail: { readonly key: string; readonly to: string; readonly subject: string }) => Effect.Effect<void, MailError>
  readonly sent: Effect.Effect<ReadonlyArray<{ readonly key: string; readonly to: string; readonly subject: string }>>
}

/** The mailer service. */
export class Mailer extends Context.Tag("examples/Mailer")<Mailer, MailerShape>() {}

/**
 * An in-process fake mailer that records what it sent. It refuses addresses
 * at `bounce.example`, and once (for `flakyFor`) sends but then fails, as a
 * mail server whose answer is lost would.
 */
export const FakeMailer = (flakyFor: string) =>
  Layer.sync(Mailer, () => {
    const sent: Array<{ key: string; to: string; subject: string }> = []
    let lostAnswer = false
    return {
      send: (mail) =>
        Effect.suspend(() => {
          if (mail.to.endsWith("@bounce.example")) return Effect.fail(new MailError({ reason: `no such mailbox ${mail.to}` }))
          // The idempotency key: a redelivered event sends nothing again.
          if (!sent.some((m) => m.key === mail.key)) sent.push(mail)
          if (mail.to.startsWith(flakyFor) && !lostAnswer) {
            lostAnswer = true
            return Effect.fail(new MailError({ reason: "answer lost after sending" }))
          }
          return Effect.void
        }),
      sent: Effect.sync(() => [...sent])
    }
  })

/** An integration event, as other services see it. */
export interface IntegrationEvent {
  readonly type: "order.ready" | "order.shipped"
  readonly orderId: string
  /** Consumers deduplicate by it. */
  readonly sequence: number
}

/** The outbox's queue (a broker in production). */
export class Outbox extends Context.Tag("examples/Outbox")<Outbox, Queue.Queue<IntegrationEvent>>() {}

// In a real system the customer's address comes from the order; here it is derived from the order id.
const customerOf = (orderId: string) =>
  orderId.includes("bounce") ? `customer-of-${orderId}@bounce.example` : `customer-of-${orderId}@example.com`

/** E-mails the customer once per shipped order, at least once delivered, idempotent by sequence. */
export const notifyCustomer = Subscription.make({
  name: "notify-customer",
  events: OrderShipped,
  handle: (envelope) =>
    Effect.flatMap(Mailer, (mailer) =>
      mailer.send({
        key: `order-shipped/${envelope.sequence}`,
        to: customerOf(envelope.streamId),
        subject: `Your order ${envelope.streamId} has shipped`
      })),
  retry: Schedule.intersect(Schedule.exponential("10 millis"), Schedule.recurs(2))
})

/** Publishes integration events, in commit order, to the outbox queue. */
export const publishIntegrationEvents = Subscription.make({
  name: "publish-integration-events",
  events: Schema.Union(OrderReady, OrderShipped),
  handle: (envelope) =>
    Effect.flatMap(Outbox, (outbox) =>
      Queue.offer(outbox, {
        type: envelope.data._tag === "OrderReady" ? "order.ready" : "order.shipped",
        orderId: envelope.streamId,
        sequence: envelope.sequence
      }))
})

/** What the subscriptions are registered with. */
export const registrations = [notifyCustomer, publishIntegrationEvents] as const

const ship = (orderId: string) =>
  Session.run(Effect.zipRight(
    Session.append(Order, orderId, [new ItemReady({ name: "kettle" }), new OrderReady(), new OrderShipped()]),
    Session.saveChanges
  ))

// Reads until `done` holds, every 20 ms, for at most 20 seconds.
const poll = <A, E, R>(read: Effect.Effect<A, E, R>, done: (a: A) => boolean): Effect.Effect<A, E | Cause.TimeoutException, R> => {
  const loop: Effect.Effect<A, E, R> = Effect.flatMap(read, (a) => done(a) ? Effect.succeed(a) : Effect.zipRight(Effect.sleep("20 millis"), loop))
  return Effect.timeout(loop, "20 seconds")
}

/**
 * The story: three orders ship (one to an address that bounces); the daemon
 * notifies and publishes; the report says what was sent, published and
 * dead-lettered. Needs a store whose registry holds `registrations`.
 */
export const program = (prefix: string) =>
  Effect.scoped(Effect.gen(function*() {
    yield* Layer.build(ProjectionDaemon.layer({ pollInterval: "100 millis" }))
    const orders = [`${prefix}-a`, `${prefix}-bounce`, `${prefix}-c`]
    for (const orderId of orders) {
      yield* createOrder(orderId, ["kettle"])
      yield* ship(orderId)
    }
    const mailer = yield* Mailer
    const outbox = yield* Outbox
    const ours = <A extends { readonly to: string }>(mails: ReadonlyArray<A>) => mails.filter((m) => m.to.includes(prefix))
    // Wait until both subscriptions got through our orders (the bounced one after its retries).
    const published: Array<IntegrationEvent> = []
    while (published.filter((e) => e.type === "order.shipped").length < orders.length) {
      published.push(...(yield* Queue.takeBetween(outbox, 1, 100)).pipe((c) => Array.from(c)).filter((e) => e.orderId.startsWith(prefix)))
    }
    const sent = yield* poll(Effect.map(mailer.sent, ours), (mails) => mails.length === 2)
    const deadLetters = yield* poll(
      Effect.map(Subscription.deadLetters("notify-customer"), (letters) => letters.filter((l) => l.envelope.streamId.startsWith(prefix))),
      (letters) => letters.length === 1
    )
    yield* Console.log(`Mails sent: ${sent.map((m) => `${m.to} (${m.key})`).join(", ")}`)
    yield* Console.log(`Published: ${published.map((e) => `${e.type} ${e.orderId} #${e.sequence}`).join(", ")}`)
    yield* Console.log(`Dead letters: ${deadLetters.map((l) => `${l.envelope.streamId} v${l.envelope.version}: ${l.error}`).join(", ")}`)
    return { orders, sent, published, deadLetters }
  }))

/** The services the subscriptions use. */
export const services = (flakyFor: string) => Layer.merge(FakeMailer(flakyFor), Layer.effect(Outbox, Queue.unbounded<IntegrationEvent>()))

const main = Effect.gen(function*() {
  const { url } = yield* databaseUrl
  const prefix = `order-${Date.now().toString(36)}`
  const store = EventStorePg.layer({ schema: "chronicle" }).pipe(
    Layer.provideMerge(Projections.layer(registrations)),
    Layer.provideMerge(services(`customer-of-${prefix}-a`)),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )
  yield* Effect.provide(program(prefix), store)
}).pipe(Effect.scoped)

runMain(import.meta.url, main)
