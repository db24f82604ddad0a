/**
 * The PostgreSQL event store layer.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { type EventStoreError, InvalidOptionError } from "./Errors.js"
import { lockTimeout } from "./internal/input.js"
import * as EventStore from "./EventStore.js"
import * as PgStorage from "./pg/PgStorage.js"
import { Projections } from "./Projections.js"

/**
 * Options of the PostgreSQL store.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The PostgreSQL schema of the tables (default `chronicle`), created and migrated on start. */
  readonly schema?: string | undefined
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
  /** How often a projection daemon that does not lead a projection tries to take it over (default 500 ms). */
  readonly claimInterval?: Duration.DurationInput | undefined
  /**
   * Whether concurrent single-stream saves may share one statement, each
   * stream still checked on its own (default true).
   */
  readonly writeCombining?: boolean | undefined
  /**
   * Whether concurrent fetches outside a transaction may read their streams
   * in one statement when more than a few are in flight (default true).
   */
  readonly readCombining?: boolean | undefined
}

// The names `PgStorage.quoteSchema` accepts.
const schemaName = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/**
 * Migrates the schema and builds the store over the `SqlClient` in context.
 *
 * @since 0.1.0
 */
export const make = (options?: Options) =>
  Effect.gen(function*() {
    const schema = options?.schema ?? "chronicle"
    // Checked before anything touches the database: a bad option is a typed error, not a defect.
    if (typeof schema !== "string" || !schemaName.test(schema)) {
      return yield* new InvalidOptionError({
        option: "schema",
        value: schema,
        reason: "must be a PostgreSQL identifier: a letter or _, then up to 62 letters, digits or _"
      })
    }
    // Checked here too (as EventStore.make does) so that a bad one never touches the database.
    yield* lockTimeout("lockTimeout", options?.lockTimeout ?? "5 seconds")
    yield* PgStorage.migrate(schema)
    const storage = yield* PgStorage.make({ schema, claimInterval: options?.claimInterval, writeCombining: options?.writeCombining,
      readCombining: options?.readCombining
    })
    return yield* EventStore.make(storage, options)
  })

/**
 * The PostgreSQL store; needs `SqlClient` (e.g. `PgClient.layer`) and the
 * projection registry.
 *
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<EventStore.EventStore, EventStoreError | InvalidOptionError, SqlClient.SqlClient | Projections> =>
  Layer.scoped(EventStore.EventStore, make(options))

/**
 * The PostgreSQL store with its options read from configuration
 * (e.g. `Config.string("CHRONICLE_SCHEMA")`).
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<
  EventStore.EventStore,
  EventStoreError | InvalidOptionError | ConfigError.ConfigError,
  SqlClient.SqlClient | Projections
> =>
  Layer.scoped(EventStore.EventStore, Effect.flatMap(Config.unwrap(config), make))
