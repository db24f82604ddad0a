/**
 * Listing a tenant's streams, newest first, paged: the options checked once
 * here, for both stores, before the storage is asked.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { type EventStoreError, InvalidOptionError, type InvalidStreamIdError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import * as StreamId from "../StreamId.js"
import { textProblem } from "./input.js"
import { currentTenant, EventStore } from "./store.js"

/** @internal options of `EventStore.listStreams`. */
export interface Options {
  /** Only streams of this type (aggregate name). */
  readonly streamType?: string | undefined
  /** Streams per page (default 20, at most 1,000). */
  readonly limit?: number | undefined
  /** The page, from 1 (default 1): skips `(page - 1) * limit` streams. */
  readonly page?: number | undefined
  /** Only streams older than this one (a keyset cursor: the last id of the previous page). */
  readonly after?: string | undefined
}

/** @internal a page of streams. */
export interface Page {
  readonly streams: ReadonlyArray<Storage.StreamInfo>
  /** Whether older streams follow (ask for them with `after` the last id here, or the next page). */
  readonly more: boolean
}

/** @internal the default page size. */
export const defaultLimit = 20
/** @internal the largest page. */
export const maxLimit = 1000

const wholeIn = (option: string, value: unknown, min: number, max: number): InvalidOptionError | undefined =>
  typeof value === "number" && Number.isInteger(value) && value >= min && value <= max
    ? undefined
    : new InvalidOptionError({ option, value, reason: `must be a whole number from ${min} to ${max}` })

const checked = (options: Options | undefined): InvalidOptionError | InvalidStreamIdError | undefined => {
  const streamType = options?.streamType
  if (streamType !== undefined) {
    const problem = typeof streamType !== "string"
      ? "must be a string"
      : streamType.length === 0
      ? "must not be empty"
      : textProblem(streamType)
    if (problem !== undefined) return new InvalidOptionError({ option: "streamType", value: streamType, reason: problem })
  }
  if (options?.limit !== undefined) {
    const bad = wholeIn("limit", options.limit, 1, maxLimit)
    if (bad) return bad
  }
  if (options?.page !== undefined) {
    const bad = wholeIn("page", options.page, 1, Number.MAX_SAFE_INTEGER)
    if (bad) return bad
  }
  return undefined
}

/** @internal the current tenant's streams, newest first (by their first event), one page. */
export const listStreams = (
  options?: Options
): Effect.Effect<Page, EventStoreError | InvalidOptionError | InvalidStreamIdError, EventStore> =>
  Effect.gen(function*() {
    const bad = checked(options)
    if (bad !== undefined) return yield* bad
    const store = yield* EventStore
    const tenantId = yield* FiberRef.get(currentTenant)
    const after = options?.after
    if (after !== undefined) {
      yield* StreamId.validate(after)
      // A cursor must name a stream of this tenant: an empty page would hide the mistake.
      const first = yield* store.storage.readStream(tenantId, after, { toVersion: 1 })
      if (first.length === 0) {
        return yield* new InvalidOptionError({ option: "after", value: after, reason: `names no stream of tenant "${tenantId}"` })
      }
    }
    const limit = options?.limit ?? defaultLimit
    const offset = ((options?.page ?? 1) - 1) * limit
    // One more than asked tells whether another page follows.
    const found = yield* store.storage.listStreams(tenantId, { streamType: options?.streamType, after, offset, limit: limit + 1 })
    return { streams: found.slice(0, limit), more: found.length > limit }
  })
