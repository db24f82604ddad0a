/**
 * Subscriptions: the consumer side. A subscription is a durable, named
 * reader of the log that the `ProjectionDaemon` runs: it hands each committed
 * event it takes to `handle`, in commit order, gap-safe, at least once (its
 * position is stored only after `handle` succeeded), one node at a time with
 * failover. A failing `handle` is retried per `retry`, then the event becomes
 * a dead letter (the subscription goes on) or the subscription stops.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import * as Aggregate from "./Aggregate.js"
import type { EventStoreError, InvalidOptionError } from "./Errors.js"
import type { EventEnvelope } from "./EventEnvelope.js"
import { textProblem } from "./internal/input.js"
import * as ReadAll from "./internal/readAll.js"
import { EventStore } from "./internal/store.js"
import * as Storage from "./Storage.js"

/**
 * What a subscription does when `handle` still fails after its retries: record
 * the event as a dead letter and go on, or stop at that event.
 *
 * @since 0.2.0
 */
export type OnFailure = "deadLetter" | "stop"

/**
 * A subscription registration, passed to `Projections.layer` beside projections.
 *
 * @since 0.2.0
 */
export interface Subscription<E = any, R = never> {
  readonly _tag: "Subscription"
  readonly name: string
  /** The events it takes; others are skipped. */
  readonly events: Schema.Schema<E, any>
  readonly handle: (envelope: EventEnvelope<E>) => Effect.Effect<void, unknown, R>
  readonly retry: Schedule.Schedule<unknown, unknown>
  readonly onFailure: OnFailure
  /** Events read per round trip. */
  readonly batchSize: number
  /** @internal */
  readonly codec: Aggregate.Codec<E>
  /** @internal the event types it takes, read off `events`. */
  readonly types: ReadonlyArray<string>
}

/**
 * The services a registration's `handle` needs from `Projections.layer`: all
 * it uses but the `EventStore`, which the daemon gives it (a handler may read
 * streams and run commands).
 *
 * @since 0.2.0
 */
export type Context<X> = X extends Subscription<any, infer R> ? Exclude<R, EventStore> : never

/**
 * An event a subscription gave up on, with the error of its last try.
 *
 * @since 0.2.0
 */
export interface DeadLetter {
  readonly envelope: ReadAll.LoggedEnvelope
  readonly error: string
  readonly at: Date
}

/** The default retry: three more tries, 100, 200 and 400 ms apart. */
const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.intersect(Schedule.recurs(3))
)

const checkName = (name: unknown): string => {
  if (typeof name !== "string" || name.trim().length === 0) {
    throw new TypeError(`Subscription: name must be a non-empty string, got ${JSON.stringify(name)}`)
  }
  const problem = textProblem(name)
  if (problem !== undefined) throw new TypeError(`Subscription: name holds ${problem}`)
  return name
}

/**
 * A subscription to the events `events` takes (a Schema of tagged events:
 * tagged classes or structs, or a union of them), handled by `handle` in the
 * event's tenant, with the `EventStore` in its context. Options:
 * `retry` (a Schedule over `handle`'s failures; default three more tries with
 * exponential back-off), `onFailure` (default `"deadLetter"`), `batchSize`
 * (default 100).
 *
 * @since 0.2.0
 */
export const make = <E, EI, Err = never, R = never>(options: {
  readonly name: string
  readonly events: Schema.Schema<E, EI>
  readonly handle: (envelope: EventEnvelope<E>) => Effect.Effect<void, Err, R>
  readonly retry?: Schedule.Schedule<unknown, Err> | undefined
  readonly onFailure?: OnFailure | undefined
  readonly batchSize?: number | undefined
  /** Old event type names read as current ones (events renamed since they were stored). */
  readonly eventTypeAliases?: Aggregate.EventTypeAliases | undefined
}): Subscription<E, R> => {
  const name = checkName(options.name)
  const codec = Aggregate.makeCodec(options.events, options.eventTypeAliases, `Subscription ${name}`)
  if (codec.tags === undefined) {
    throw new TypeError(`Subscription ${name}: events must be tagged (a TaggedClass, a TaggedStruct or a union of them)`)
  }
  const batchSize = options.batchSize ?? 100
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    throw new TypeError(`Subscription ${name}: batchSize must be a whole number from 1 to 10000, got ${options.batchSize}`)
  }
  const onFailure = options.onFailure ?? "deadLetter"
  if (onFailure !== "deadLetter" && onFailure !== "stop") {
    throw new TypeError(`Subscription ${name}: onFailure must be "deadLetter" or "stop", got ${JSON.stringify(onFailure)}`)
  }
  return {
    _tag: "Subscription",
    name,
    events: options.events,
    handle: options.handle,
    retry: (options.retry ?? defaultRetry) as Schedule.Schedule<unknown, unknown>,
    onFailure,
    batchSize,
    codec,
    types: Array.from(codec.tags)
  }
}

/** @internal the stored identity of a subscription: version 0 of its name, beside the projections' 1 and up. */
export const refOf = (name: string): Storage.ProjectionRef => ({ name, version: 0 })

/**
 * A subscription's dead letters, oldest first.
 *
 * @since 0.2.0
 */
export const deadLetters = (name: string): Effect.Effect<ReadonlyArray<DeadLetter>, EventStoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) =>
    Effect.map(store.storage.projections.deadLetters(refOf(name)), (letters) =>
      letters.map((letter) => ({ envelope: ReadAll.envelopeOf(letter.event), error: letter.error, at: letter.at }))))

/**
 * Moves a subscription's position to just after `position` (to the start of
 * the log when omitted: a replay), and clears a stop. It takes the
 * subscription's leadership meanwhile, from whichever node runs it.
 *
 * @since 0.2.0
 */
export const reset = (
  name: string,
  position?: ReadAll.Position
): Effect.Effect<void, EventStoreError | InvalidOptionError, EventStore> =>
  Effect.gen(function*() {
    const checkpoint = position === undefined ? Storage.origin : yield* ReadAll.checkpointOf("position", position)
    const store = yield* EventStore
    yield* Effect.scoped(Effect.flatMap(
      store.storage.projections.takeOver(refOf(name)),
      (worker) => worker.store([], { checkpoint, processed: 0 })
    ))
  })
