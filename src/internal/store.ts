import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
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
}

/** @internal */
export class EventStore extends Context.Tag("effect-chronicle/EventStore")<EventStore, EventStoreShape>() {}

/** @internal */
export const defaultTenant = "*DEFAULT*"

/** @internal */
export const currentTenant: FiberRef.FiberRef<string> = FiberRef.unsafeMake(defaultTenant)

/** @internal */
export const currentMetadata: FiberRef.FiberRef<EventMetadata> = FiberRef.unsafeMake<EventMetadata>({})
