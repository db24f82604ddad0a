/**
 * Store layers for the tests: the in-memory store, and the PostgreSQL store on
 * a schema of its own that is dropped when the layer is released.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { inject } from "vitest"
import { Aggregate, EventStoreMemory, EventStorePg, type Projection, Projections, Session, type Subscription } from "effect-chronicle"

export const newId = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`

export const pgClient = (options?: { readonly maxConnections?: number }) =>
  PgClient.layer({ url: Redacted.make(inject("databaseUrl")), maxConnections: options?.maxConnections ?? 20 })

/** A fresh schema, dropped (with everything in it) when the layer is released. */
export const scratchSchema = (prefix = "chronicle_test") =>
  Layer.scoped(
    ScratchSchema,
    Effect.gen(function*() {
      const name = `${prefix}_${Math.random().toString(36).slice(2, 10)}`
      const sql = yield* SqlClient.SqlClient
      yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe(`DROP SCHEMA IF EXISTS "${name}" CASCADE`)))
      return name
    })
  )

export class ScratchSchema extends Effect.Tag("test/ScratchSchema")<ScratchSchema, string>() {}

export interface StoreUnderTest {
  readonly name: "memory" | "postgres"
  /** What is set differently from the defaults, for test names. */
  readonly variant?: string | undefined
  readonly layer: (
    registrations: ReadonlyArray<Projection.Projection | Subscription.Subscription<any, never>>
  ) => Layer.Layer<any, any, never>
  /**
   * The same store as another node sees it: on PostgreSQL a store and a pool
   * of its own on the same schema (needs the suite's ScratchSchema); in memory
   * nothing more (the one store is shared).
   */
  readonly anotherNode: (
    registrations: ReadonlyArray<Projection.Projection | Subscription.Subscription<any, never>>
  ) => Layer.Layer<any, any, never>
  /** The store with a lock time-out option, no projections (for option validation). */
  readonly withLockTimeout: (lockTimeout: Duration.DurationInput) => Layer.Layer<any, any, never>
}

const sameStore = () => Layer.empty as unknown as Layer.Layer<any, any, never>

export const memoryStore: StoreUnderTest = {
  name: "memory",
  anotherNode: sameStore,
  layer: (projections) => EventStoreMemory.layer.pipe(Layer.provideMerge(Projections.layer(projections))),
  withLockTimeout: (lockTimeout) => EventStoreMemory.layerWith({ lockTimeout }).pipe(Layer.provideMerge(Projections.layer([])))
}

const variantOf = (options?: { readonly liveStateCache?: number }) =>
  options?.liveStateCache === undefined ? undefined : `Live states kept (${options.liveStateCache})`

export const memoryStoreWith = (options: { readonly liveStateCache?: number }): StoreUnderTest => ({
  name: "memory",
  anotherNode: sameStore,
  variant: variantOf(options),
  layer: (projections) => EventStoreMemory.layerWith(options).pipe(Layer.provideMerge(Projections.layer(projections))),
  withLockTimeout: (lockTimeout) =>
    EventStoreMemory.layerWith({ ...options, lockTimeout }).pipe(Layer.provideMerge(Projections.layer([])))
})

export const pgStore = (options?: { readonly maxConnections?: number; readonly liveStateCache?: number }): StoreUnderTest => ({
  name: "postgres",
  anotherNode: (registrations) =>
    Layer.unwrapEffect(Effect.map(ScratchSchema, (schema) =>
      EventStorePg.layer({ schema }).pipe(
        Layer.provideMerge(Projections.layer(registrations)),
        Layer.provideMerge(pgClient())
      ))) as unknown as Layer.Layer<any, any, never>,
  variant: variantOf(options),
  layer: (projections) =>
    Layer.unwrapEffect(Effect.map(ScratchSchema, (schema) =>
      EventStorePg.layer({ schema, liveStateCache: options?.liveStateCache }).pipe(Layer.provideMerge(Projections.layer(projections)))
    )).pipe(
      Layer.provideMerge(scratchSchema()),
      Layer.provideMerge(pgClient(options))
    ),
  withLockTimeout: (lockTimeout) =>
    Layer.unwrapEffect(Effect.map(ScratchSchema, (schema) =>
      EventStorePg.layer({ schema, lockTimeout, liveStateCache: options?.liveStateCache }).pipe(
        Layer.provideMerge(Projections.layer([]))
      )
    )).pipe(
      Layer.provideMerge(scratchSchema()),
      Layer.provideMerge(pgClient(options))
    )
})

/**
 * Appends to the stream an event of a type that the test aggregates named
 * "Tick" do not know (through an aggregate of that name that does), for the
 * failures of a fold that meets one.
 */
export const appendForeignTick = (id: string) =>
  Session.run(Effect.zipRight(
    Session.append(Aggregate.make({ name: "Tick", events: Schema.TaggedStruct("Other", {}), initial: 0, evolve: (n: number) => n }), id, [
      { _tag: "Other" as const }
    ]),
    Session.saveChanges
  ))
