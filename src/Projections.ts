/**
 * The projection registry: which lifecycle each aggregate has. An aggregate
 * with no registration is Live.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Aggregate from "./Aggregate.js"
import type * as Projection from "./Projection.js"
import { EventStore } from "./internal/store.js"
import type * as Subscription from "./Subscription.js"

/**
 * What `Projections.layer` takes: projections and subscriptions.
 *
 * @since 0.2.0
 */
export type Registration = Projection.Projection | Subscription.Subscription<any, any>

/**
 * The registry's interface.
 *
 * @since 0.1.0
 */
export interface Registry {
  readonly all: ReadonlyArray<Projection.Projection>
  /** The newest snapshot registration of an aggregate (the one fetches read), if any. */
  readonly snapshotOf: (aggregate: Aggregate.Any) => Projection.Snapshot | undefined
  /**
   * The stored (Inline or Async) snapshot versions of an aggregate, newest
   * first: a fetch reads the newest that has a document for the stream.
   */
  readonly storedSnapshotVersionsOf: (aggregate: Aggregate.Any) => ReadonlyArray<number>
  /** Every Inline snapshot version of an aggregate: all are written in the append transaction. */
  readonly inlineSnapshotsOf: (aggregate: Aggregate.Any) => ReadonlyArray<Projection.Snapshot>
  /** The lifecycle an aggregate's state is kept with. */
  readonly lifecycleOf: (aggregate: Aggregate.Any) => Projection.Lifecycle
  /** Inline multi-stream projections, written in every append transaction. */
  readonly inlineMultiStream: ReadonlyArray<Projection.MultiStream>
  /** Every Async projection, run by the projection daemon. */
  readonly async: ReadonlyArray<Projection.Projection>
  /** Every subscription, run by the projection daemon (their services provided). */
  readonly subscriptions: ReadonlyArray<Subscription.Subscription<any, never>>
}

/**
 * The projection registry service.
 *
 * @since 0.1.0
 */
export class Projections extends Context.Tag("effect-chronicle/Projections")<Projections, Registry>() {}

/**
 * Builds a registry, rejecting two registrations of the same name and version
 * (or two subscriptions of one name).
 *
 * @since 0.1.0
 */
export const make = (all: ReadonlyArray<Projection.Projection | Subscription.Subscription<any, never>>): Registry => {
  const registrations = all.filter((r): r is Projection.Projection => r._tag !== "Subscription")
  const subscriptions = all.filter((r): r is Subscription.Subscription<any, never> => r._tag === "Subscription")
  const names = new Set<string>()
  for (const s of subscriptions) {
    if (names.has(s.name)) throw new TypeError(`Subscription ${s.name} is registered twice`)
    names.add(s.name)
  }
  const seen = new Set<string>()
  // The newest version of a snapshot is the one fetches read (blue/green).
  const snapshots = new Map<string, Projection.Snapshot>()
  for (const p of registrations) {
    const key = `${p.name}@${p.version}`
    if (seen.has(key)) throw new TypeError(`Projection ${p.name} version ${p.version} is registered twice`)
    seen.add(key)
    if (p._tag === "Snapshot") {
      const current = snapshots.get(p.name)
      if (current === undefined || current.version < p.version) snapshots.set(p.name, p)
    }
  }
  const stored = new Map<string, Array<number>>()
  for (const p of registrations) {
    if (p._tag === "Snapshot" && p.lifecycle !== "Live") stored.set(p.name, [...(stored.get(p.name) ?? []), p.version])
  }
  for (const versions of stored.values()) versions.sort((a, b) => b - a)
  const inline = new Map<string, Array<Projection.Snapshot>>()
  for (const p of registrations) {
    if (p._tag === "Snapshot" && p.lifecycle === "Inline") {
      const list = inline.get(p.name) ?? []
      list.push(p)
      inline.set(p.name, list)
    }
  }
  return {
    all: registrations,
    snapshotOf: (aggregate) => snapshots.get(aggregate.name),
    inlineSnapshotsOf: (aggregate) => inline.get(aggregate.name) ?? [],
    storedSnapshotVersionsOf: (aggregate) => stored.get(aggregate.name) ?? [],
    lifecycleOf: (aggregate) => snapshots.get(aggregate.name)?.lifecycle ?? "Live",
    inlineMultiStream: registrations.filter((p): p is Projection.MultiStream =>
      p._tag === "MultiStream" && p.lifecycle === "Inline"
    ),
    async: registrations.filter((p) => p.lifecycle === "Async"),
    subscriptions
  }
}

/**
 * Provides the registry built from the given registrations. The layer needs
 * what the subscriptions' `handle` functions need, and hands it to them.
 *
 * @since 0.1.0
 */
export const layer = <const Registrations extends ReadonlyArray<Registration>>(
  registrations: Registrations
): Layer.Layer<Projections, never, Subscription.Context<Registrations[number]>> =>
  Layer.effect(
    Projections,
    Effect.map(Effect.context<Subscription.Context<Registrations[number]>>(), (captured) => {
      // The daemon gives handlers its EventStore: one in context here (another store of the app) must not shadow it.
      const context = Context.omit(EventStore)(captured as Context.Context<unknown>) as Context.Context<unknown>
      return make(registrations.map((r) =>
        r._tag === "Subscription"
          ? {
            ...r,
            handle: (envelope: any) => Effect.provide(Effect.suspend(() => r.handle(envelope)), context)
          } as Subscription.Subscription<any, never>
          : r
      ))
    })
  )
