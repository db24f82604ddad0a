/**
 * The global log as a Stream: read in batches through the storage's gap-safe
 * `readLog`, one batch at a time as the consumer pulls (constant memory over
 * any length of log), ending at the head or, live, waiting for commits.
 *
 * @internal
 */
import type * as Brand from "effect/Brand"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { type EventStoreError, InvalidOptionError } from "../Errors.js"
import type { EventEnvelope } from "../EventEnvelope.js"
import * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"
import { currentTenant, EventStore } from "./store.js"

/**
 * @internal a place in the global log, between two events: opaque, totally
 * ordered, a string (so it stores as JSON or text as it is).
 */
export type Position = string & Brand.Brand<"effect-chronicle/Position">

/** @internal an event of the global log, with its position (resume after it). */
export interface LoggedEnvelope extends EventEnvelope<unknown> {
  readonly position: Position
}

/** @internal options of `readAll`. */
export interface Options {
  /** Start just after this position (default: the start of the log). */
  readonly after?: Position | undefined
  /** Only events of these types. */
  readonly types?: ReadonlyArray<string> | undefined
  /** Only events of streams of these types (aggregate names). */
  readonly streamTypes?: ReadonlyArray<string> | undefined
  /** Keep waiting for new commits at the head instead of ending (default false). */
  readonly live?: boolean | undefined
  /** Events read per round trip (default 500, at most 10,000). */
  readonly batchSize?: number | undefined
  /** Every tenant's events, not only the current tenant's (default false). */
  readonly allTenants?: boolean | undefined
  /** Also the events of archived streams (`Session.archiveStream`), left out by default. */
  readonly includeArchived?: boolean | undefined
  /** Live: how often to look for commits when no notification came (default 1 second). */
  readonly pollInterval?: Duration.DurationInput | undefined
}

/** @internal the position of a checkpoint. */
export const positionOf = (checkpoint: Storage.Checkpoint): Position => `${checkpoint.txId}/${checkpoint.sequence}` as Position

/** @internal the position before the first event. */
export const start: Position = positionOf(Storage.origin)

/** @internal the checkpoint a position stands for, or why it stands for none. */
export const checkpointOf = (option: string, position: unknown): Either.Either<Storage.Checkpoint, InvalidOptionError> => {
  const match = typeof position === "string" ? /^(\d{1,20})\/(\d{1,15})$/.exec(position) : null
  if (match === null) {
    return Either.left(new InvalidOptionError({ option, value: position, reason: "is not a position given by the store" }))
  }
  return Either.right({ txId: BigInt(match[1]), sequence: Number(match[2]) })
}

const maxBatchSize = 10_000

const names = (option: string, value: unknown): Either.Either<ReadonlyArray<string> | undefined, InvalidOptionError> =>
  value === undefined || (Array.isArray(value) && value.every((v) => typeof v === "string"))
    ? Either.right(value as ReadonlyArray<string> | undefined)
    : Either.left(new InvalidOptionError({ option, value, reason: "must be an array of strings" }))

/** @internal the storage's filter and first checkpoint of `options`, checked. */
export const check = (options: Options | undefined, tenantId: string) =>
  Either.gen(function*() {
    const after = options?.after === undefined ? Storage.origin : yield* checkpointOf("after", options.after)
    const batchSize = options?.batchSize ?? 500
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > maxBatchSize) {
      return yield* Either.left(
        new InvalidOptionError({ option: "batchSize", value: batchSize, reason: `must be a whole number from 1 to ${maxBatchSize}` })
      )
    }
    const filter: Storage.LogFilter = {
      tenantId: options?.allTenants === true ? undefined : tenantId,
      types: yield* names("types", options?.types),
      streamTypes: yield* names("streamTypes", options?.streamTypes),
      includeArchived: options?.includeArchived === true
    }
    return { after, batchSize, filter }
  })

/** @internal the envelope of a logged event. */
export const envelopeOf = (event: Storage.LoggedEvent): LoggedEnvelope => ({
  ...Envelope.ofStored<unknown>(event, event.data),
  position: positionOf(event)
})

/** @internal the global log of the current tenant (or all), in commit order, gap-safe. */
export const readAll = (options?: Options): Stream.Stream<LoggedEnvelope, EventStoreError | InvalidOptionError, EventStore> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const store = yield* EventStore
    const { after, batchSize, filter } = yield* check(options, yield* FiberRef.get(currentTenant))
    const log = store.storage.projections
    const read = (from: Storage.Checkpoint) => log.readLog(from, batchSize, filter)
    if (options?.live !== true) {
      // To the head as of now: what was committed (or is committing) before the call, and nothing after.
      const target = (yield* log.head).checkpoint
      return Stream.paginateChunkEffect({ from: after, last: false }, (page) =>
        Effect.flatMap(read(page.from), ({ end, events, scanned }) => {
          // Nothing committed after the call: the read ends at the head it had then.
          const passed = !Storage.isAfter(target, end)
          const chunk = Chunk.unsafeFromArray((passed ? events.filter((e) => !Storage.isAfter(e, target)) : events).map(envelopeOf))
          // Once the read reached the head, every transaction up to it has ended (the head was below the horizon).
          if (passed || (scanned < batchSize && page.last)) return Effect.succeed([chunk, Option.none()] as const)
          if (scanned === batchSize) return Effect.succeed([chunk, Option.some({ from: end, last: page.last })] as const)
          // A short page stops at the gap-safe horizon: once no transaction up to the head
          // is still running, one more read gets the rest, and the stream ends.
          return Effect.map(
            Effect.flatMap(log.settled(target), (settled) => settled ? Effect.succeed(true) : Effect.as(Effect.sleep("10 millis"), false)),
            (settled) => [chunk, Option.some({ from: end, last: settled })] as const
          )
        }))
    }
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const wake = yield* Queue.sliding<void>(1)
    yield* Effect.forkScoped(Stream.runForEach(log.changes, () => Queue.offer(wake, undefined)))
    const waitForCommit = Effect.ignore(Effect.timeout(Queue.take(wake), pollInterval))
    // Live: a page with no event the filter takes moves on, and at the head waits for a
    // commit's wake-up (or the poll interval) and reads again.
    const next = (from: Storage.Checkpoint): Effect.Effect<Storage.LogPage, EventStoreError> =>
      Effect.flatMap(read(from), (page) =>
        page.events.length > 0
          ? Effect.succeed(page)
          : page.scanned === batchSize
          ? next(page.end)
          : Effect.zipRight(waitForCommit, next(page.end)))
    return Stream.paginateChunkEffect(after, (from) =>
      Effect.map(next(from), (page) => [Chunk.unsafeFromArray(page.events.map(envelopeOf)), Option.some(page.end)] as const))
  }))
