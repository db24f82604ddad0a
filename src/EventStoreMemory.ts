/**
 * The in-memory event store, with the same semantics as PostgreSQL, for tests
 * and prototypes.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { InvalidOptionError } from "./Errors.js"
import * as EventStore from "./EventStore.js"
import * as MemoryStorage from "./memory/MemoryStorage.js"
import { Projections } from "./Projections.js"

/**
 * Options of the in-memory store.
 *
 * @since 0.1.0
 */
export interface Options {
  /** Lock time-out of exclusive fetches that do not set one (default 5 seconds). */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /**
   * How many Live aggregate states (of aggregates with a `state` Schema) the
   * store keeps between sessions (default 0: none). A fetch of a kept stream
   * reads only the kept event and those after it. Inside a caller's
   * transaction the cache is not used. A stream is forgotten when its kept
   * event is no longer there (the stream was replaced) or its events fail to
   * decode.
   */
  readonly liveStateCache?: number | undefined
  /** The clock lock time-outs, retry back-off and polling wait on (default: the waiting fiber's; see `EventStore.MakeOptions`). */
  readonly waitClock?: Clock.Clock | undefined
}

/**
 * Builds an in-memory store with its own empty log.
 *
 * @since 0.1.0
 */
export const make = (options?: Options) =>
  Effect.gen(function*() {
    const storage = yield* MemoryStorage.make
    return yield* EventStore.make(storage, options)
  })

/**
 * An in-memory store with options; fails with `InvalidOptionError` when one
 * cannot be honoured (a lock time-out PostgreSQL would refuse).
 *
 * @since 0.1.0
 */
export const layerWith = (options?: Options): Layer.Layer<EventStore.EventStore, InvalidOptionError, Projections> =>
  Layer.effect(EventStore.EventStore, make(options))

/**
 * The in-memory store; each build of the layer starts empty.
 *
 * @since 0.1.0
 */
// The default options are valid: this layer cannot fail.
export const layer: Layer.Layer<EventStore.EventStore, never, Projections> = Layer.orDie(layerWith())
