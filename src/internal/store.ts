import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type { EventMetadata } from "../EventEnvelope.js"
import type * as Projections from "../Projections.js"
import type * as Storage from "../Storage.js"
import type * as StateCache from "./stateCache.js"

/** @internal */
export interface EventStoreShape {
  readonly storage: Storage.Storage
  readonly projections: Projections.Registry
  readonly defaultLockTimeout: Duration.Duration
  /** Live aggregate states kept between sessions, when the store was asked to. */
  readonly liveStates?: StateCache.StateCache | undefined
  /** The clock the store waits on (lock time-outs, retry back-off, the daemon's polling); unset: the fiber's. */
  readonly waitClock?: Clock.Clock | undefined
}

/** @internal */
export class EventStore extends Context.Tag("effect-chronicle/EventStore")<EventStore, EventStoreShape>() {}

/** @internal */
export const defaultTenant = "*DEFAULT*"

/** @internal */
export const currentTenant: FiberRef.FiberRef<string> = FiberRef.unsafeMake(defaultTenant)

/** @internal */
export const currentMetadata: FiberRef.FiberRef<EventMetadata> = FiberRef.unsafeMake<EventMetadata>({})

/**
 * @internal runs a wait of the store (a sleep, a time-out) on its wait clock,
 * so that a test under `TestClock` that never adjusts it does not stall.
 */
export const onWaitClock = <A, E, R>(store: EventStoreShape, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  store.waitClock === undefined ? effect : Effect.withClock(effect, store.waitClock)
