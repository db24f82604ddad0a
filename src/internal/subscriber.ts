/**
 * Delivering a subscription: while this process leads it, read the events it
 * takes after its position (every tenant's, gap-safe), hand each to `handle`
 * in its tenant, retry per the subscription's Schedule, then dead-letter the
 * event or stop. The position is stored after `handle` succeeded: at the end
 * of each batch, with each dead letter, and when the daemon stops (so a
 * graceful stop delivers again only the event whose handling it interrupted).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type { EventStoreError } from "../Errors.js"
import * as Storage from "../Storage.js"
import type * as Subscription from "../Subscription.js"
import * as Envelope from "./envelope.js"
import * as Tracing from "./tracing.js"
import { currentTenant, type EventStoreShape } from "./store.js"

/** @internal what a subscription's delivery needs from the daemon. */
export interface Delivering {
  readonly store: EventStoreShape
  readonly storage: Storage.Storage
  readonly pollInterval: Duration.Duration
  readonly leaders: Set<string>
  readonly errors: Map<string, string>
}

/** @internal the key a subscription's leadership and errors are kept under. */
export const keyOf = (name: string) => `subscription:${name}`

// An error as one line: "Tag: message", or the tag with the error's fields when it has no message.
const describe = (error: unknown): string => {
  if (error === null || typeof error !== "object") return String(error)
  const { _tag: tag, message } = error as { _tag?: unknown; message?: unknown }
  if (typeof message === "string" && message !== "") return typeof tag === "string" ? `${tag}: ${message}` : message
  if (typeof tag !== "string") return String(error)
  try {
    const { _tag, ...fields } = error as Record<string, unknown>
    return Object.keys(fields).length === 0 ? tag : `${tag} ${JSON.stringify(fields)}`
  } catch {
    return tag
  }
}

// A defect of `handle` counts as its failure (retried, then dead-lettered); an interruption does not.
const attempt = (handled: Effect.Effect<void, unknown>): Effect.Effect<void, unknown> =>
  Effect.catchAllCause(handled, (cause) => Effect.fail(Cause.squash(cause)))

/**
 * One event to `handle`, with its retries: None when it was handled, else the
 * last error. It runs in the tenant and with the EventStore its fiber has.
 */
const deliver = (
  subscription: Subscription.Subscription<any, never>,
  event: Storage.LoggedEvent
): Effect.Effect<Option.Option<string>> => {
  const decoded = subscription.codec.decode(event.type, event.data)
  // A stored event its Schema rejects cannot succeed on a retry: it fails at once.
  if (Either.isLeft(decoded)) return Effect.succeed(Option.some(`EventDecodeError: ${decoded.left}`))
  const envelope = Envelope.ofDecoded(subscription.codec, event, decoded.right)
  // Suspended: a handler that throws instead of failing fails like one that fails.
  const handled = Tracing.span(Effect.suspend(() => subscription.handle(envelope)), "chronicle.subscription.handle", {
    "chronicle.subscription": subscription.name,
    "chronicle.projection": subscription.name,
    "chronicle.events": 1,
    "chronicle.stream_id": event.streamId,
    "chronicle.version": event.version,
    "chronicle.sequence": event.sequence
  })
  // The first try goes alone: only a failure pays for the schedule, which is then fed that failure.
  return Effect.flatMap(Effect.exit(handled), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.succeed(Option.none())
    // An interruption of this fiber (the daemon stopping) takes effect at this yield; one that
    // came from inside the handler (it interrupted itself, or joined an interrupted fiber) does
    // not, and counts as its failure.
    return Effect.zipRight(Effect.yieldNow(), retry(subscription, attempt(handled), Cause.squash(exit.cause)))
  })
}

const retry = (
  subscription: Subscription.Subscription<any, never>,
  once: Effect.Effect<void, unknown>,
  firstError: unknown
): Effect.Effect<Option.Option<string>> =>
  Effect.gen(function*() {
    const driver = yield* Schedule.driver(subscription.retry)
    let error = firstError
    while (true) {
      // The schedule waits its delay, or says it is done.
      if (Either.isLeft(yield* Effect.either(driver.next(error)))) return Option.some(describe(error))
      const again = yield* Effect.either(once)
      if (Either.isRight(again)) return Option.none()
      error = again.left
    }
  })

const positionOf = (event: Storage.LoggedEvent): Storage.Checkpoint => ({ txId: event.txId, sequence: event.sequence })

/**
 * @internal delivers while this process leads the subscription; returns when
 * someone asks for the leadership (a reset), or, stopped, once asked.
 */
export const lead = (
  delivering: Delivering,
  subscription: Subscription.Subscription<any, never>,
  wake: Queue.Queue<void>
) =>
  Effect.scoped(Effect.gen(function*() {
    const key = keyOf(subscription.name)
    const worker = yield* delivering.storage.projections.claim({ name: subscription.name, version: 0 })
    delivering.leaders.add(key)
    // What this node says of the subscription holds while it leads it.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        delivering.leaders.delete(key)
        delivering.errors.delete(key)
      })
    )
    const idle = Effect.ignore(Effect.timeout(Queue.take(wake), delivering.pollInterval))
    const stopped = Effect.gen(function*() {
      while (!(yield* worker.asked)) yield* idle
    })
    let delivered = yield* worker.progress
    if (delivered.error !== undefined) {
      delivering.errors.set(key, delivered.error)
      return yield* stopped
    }
    let stored = delivered
    const flush = Effect.suspend(() =>
      delivered === stored ? Effect.void : Effect.tap(worker.store([], delivered), () => void (stored = delivered))
    )
    // A stop (or an interrupted handle) keeps what was handled before it.
    yield* Effect.addFinalizer(() => Effect.ignore(Effect.timeout(Effect.interruptible(flush), "5 seconds")))
    const filter: Storage.LogFilter = { types: subscription.types }
    // `handle` runs in the event's tenant: set on this fiber when it changes, not around every event.
    let tenant: string | undefined
    const read = (after: Storage.Checkpoint) => delivering.storage.projections.readLog(after, subscription.batchSize, filter)
    // The next batch is read while this one is handled, when more may follow.
    let next: Fiber.Fiber<Storage.LogPage, EventStoreError> | undefined
    while (!(yield* worker.asked)) {
      const page = next === undefined ? yield* read(delivered.checkpoint) : yield* Fiber.join(next)
      next = undefined
      if (page.scanned === subscription.batchSize) next = yield* Effect.forkScoped(read(page.end))
      const batch = page.events
      // Only `handle` can be interrupted: once it succeeded the position moves with no
      // interruption in between, so a stop delivers again only an event whose handling it interrupted.
      const outcome = yield* Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          for (const event of batch) {
            if (event.tenantId !== tenant) {
              tenant = event.tenantId
              yield* FiberRef.set(currentTenant, tenant)
            }
            const after: Storage.Progress = { checkpoint: positionOf(event), processed: delivered.processed + 1 }
            const failed = yield* restore(deliver(subscription, event))
            if (Option.isNone(failed)) {
              delivered = after
              continue
            }
            if (subscription.onFailure === "stop") {
              yield* flush
              stored = delivered = { ...delivered, error: failed.value }
              yield* worker.store([], delivered)
              delivering.errors.set(key, failed.value)
              yield* Effect.logWarning(`Subscription ${subscription.name} stopped at sequence ${event.sequence}: ${failed.value}`)
              return "stopped" as const
            }
            stored = delivered = after
            yield* worker.store([], after, [{ event, error: failed.value, at: new Date() }])
            yield* Effect.logWarning(`Subscription ${subscription.name}: sequence ${event.sequence} dead-lettered: ${failed.value}`)
          }
          return "delivered" as const
        })
      )
      if (outcome === "stopped") {
        if (next !== undefined) yield* Fiber.interrupt(next)
        return yield* stopped
      }
      // Past what the page looked at: the events this subscription does not take are not read again.
      if (Storage.isAfter(page.end, delivered.checkpoint)) delivered = { ...delivered, checkpoint: page.end }
      yield* flush
      if (page.scanned < subscription.batchSize) yield* idle
      delivering.errors.delete(key)
    }
  }))
