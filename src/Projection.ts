/**
 * Projection definitions: how an aggregate's state (or a view across streams)
 * is kept. Definitions are plain data; `Projections.layer` registers them.
 *
 * @since 0.1.0
 */
import * as Aggregate from "./Aggregate.js"
import type { EventEnvelope } from "./EventEnvelope.js"
import type * as Schema from "effect/Schema"

/**
 * When a snapshot is kept: never (`Live`, folded on every fetch), in the append
 * transaction (`Inline`), or by the projection daemon (`Async`).
 *
 * @since 0.1.0
 */
export type Lifecycle = "Live" | "Inline" | "Async"

/**
 * An aggregate's state kept per stream.
 *
 * @since 0.1.0
 */
export interface Snapshot<S = any, E = any> {
  readonly _tag: "Snapshot"
  readonly name: string
  readonly aggregate: Aggregate.Aggregate<S, E, any, any>
  readonly lifecycle: Lifecycle
  readonly version: number
}

/**
 * A document per key, fed by the events of many streams.
 *
 * @since 0.1.0
 */
export interface MultiStream<S = any, E = any> {
  readonly _tag: "MultiStream"
  readonly name: string
  readonly events: Schema.Schema<E, any>
  readonly state: Schema.Schema<S, any>
  readonly initial: S
  readonly key: (envelope: EventEnvelope<E>) => string | undefined
  readonly evolve: (state: S, event: E, envelope: EventEnvelope<E>) => S
  readonly lifecycle: "Inline" | "Async"
  readonly version: number
  /** @internal */
  readonly codec: Aggregate.Codec<E>
  /** @internal */
  readonly stateCodec: Aggregate.StateCodec<S>
}

/**
 * Any projection definition.
 *
 * @since 0.1.0
 */
export type Projection = Snapshot | MultiStream

const checkVersion = (name: string, version: number | undefined): number => {
  const v = version ?? 1
  if (!Number.isInteger(v) || v < 1) {
    throw new TypeError(`Projection ${name}: version must be a whole number >= 1, got ${version}`)
  }
  return v
}

/**
 * The aggregate's state stored per stream with the given lifecycle.
 *
 * @since 0.1.0
 */
export const snapshot = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  lifecycle: Lifecycle,
  options?: { readonly version?: number | undefined }
): Snapshot<S, E> => {
  if (lifecycle !== "Live" && aggregate.state === undefined) {
    throw new TypeError(`Projection.snapshot(${aggregate.name}, "${lifecycle}") needs the aggregate's state Schema`)
  }
  return {
    _tag: "Snapshot",
    name: aggregate.name,
    aggregate,
    lifecycle,
    version: checkVersion(aggregate.name, options?.version)
  }
}

/**
 * A view keyed by something other than the stream id (`key` returns undefined
 * for events it ignores).
 *
 * @since 0.1.0
 */
export const multiStream = <S, E, SI, EI>(options: {
  readonly name: string
  readonly events: Schema.Schema<E, EI>
  readonly state: Schema.Schema<S, SI>
  readonly initial: S
  readonly key: (envelope: EventEnvelope<E>) => string | undefined
  readonly evolve: (state: S, event: E, envelope: EventEnvelope<E>) => S
  readonly lifecycle: "Inline" | "Async"
  readonly version?: number | undefined
  /** Old event type names read as current ones (events renamed since they were stored). */
  readonly eventTypeAliases?: Aggregate.EventTypeAliases | undefined
}): MultiStream<S, E> => ({
  _tag: "MultiStream",
  name: options.name,
  events: options.events,
  state: options.state,
  initial: options.initial,
  key: options.key,
  evolve: options.evolve,
  lifecycle: options.lifecycle,
  version: checkVersion(options.name, options.version),
  codec: Aggregate.makeCodec(options.events, options.eventTypeAliases, `Projection.multiStream(${options.name})`),
  stateCodec: Aggregate.makeStateCodec(options.state)
})
