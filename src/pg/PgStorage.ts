/**
 * The PostgreSQL storage, over `@effect/sql`: the face that assembles its
 * modules (statements, driver, reads, commits, write-combining, transactions,
 * the daemons' storage) into the `Storage` port.
 *
 * A save of one stream is one statement and one round trip: a CTE bumps the
 * stream row only if its version matches, and inserts the events only if every
 * stream in the batch passed, so a losing writer never draws a sequence number.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Storage from "../Storage.js"
import * as DaemonStorage from "./daemonStorage.js"
import * as Driver from "./driver.js"
import * as Reads from "./reads.js"
import { notifyChannel, preparedNames, quoteSchema, statements } from "./statements.js"
import type { Store } from "./store.js"
import * as Transactions from "./transactions.js"
import * as WriteCombining from "./writeCombining.js"

// What the store (EventStorePg), the tests and the benchmark use of the modules.
export { sqlState } from "./failures.js"
export { migrate } from "./migrations.js"
export { combinedReadStatements, maxReadsInFlight } from "./reads.js"
export { notifyChannel, quoteSchema, singleStreamStatement, statementName, statements } from "./statements.js"
export { maxSavesInFlight } from "./writeCombining.js"

/**
 * Options of the PostgreSQL storage.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The PostgreSQL schema the tables live in (default `chronicle`). */
  readonly schema?: string | undefined
  /** How often a projection daemon that does not lead a projection tries to take it over (default 500 ms). */
  readonly claimInterval?: Duration.DurationInput | undefined
  /** Whether concurrent single-stream saves may share one statement (default true). */
  readonly writeCombining?: boolean | undefined
  /** Whether concurrent whole-stream reads outside a transaction may share one statement (default true). */
  readonly readCombining?: boolean | undefined
}

/**
 * @internal the statements of a store now running alone or combined, and the
 * reads and saves waiting to be combined: all zero once the store is idle.
 */
export const inFlightOf = new WeakMap<Storage.Storage, () => { readonly reads: number; readonly saves: number; readonly queued: number }>()

/**
 * Creates the PostgreSQL storage over the `SqlClient` in context (tables must
 * exist: see `migrate`).
 *
 * @since 0.1.0
 */
export const make = (options?: Options) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const schema = options?.schema ?? "chronicle"
    const quoted = quoteSchema(schema)
    const q = statements(quoted)
    const names = preparedNames(schema)
    const driver = yield* Driver.make(sql, [names.read, names.readAll, names.readFold, names.readFrom, names.readMany, names.readManyFold, names.snapshot])
    const listeners = yield* DaemonStorage.watchListeners(sql, q)
    const store: Store = {
      sql,
      schema,
      quoted,
      q,
      names,
      driver,
      channel: notifyChannel(schema),
      listeners,
      singleStatements: new Map()
    }
    const reads = Reads.make(store, options?.readCombining !== false)
    const saves = WriteCombining.make(store, options?.writeCombining !== false)
    const storage: Storage.Storage = {
      readStream: (tenantId, id, options) => Reads.readStream(reads, tenantId, id, options),
      loadSnapshot: (tenantId, id, projection, versions) => Reads.loadSnapshot(store, tenantId, id, projection, versions),
      readDocuments: (refs) => Reads.readDocuments(store, refs),
      commit: (batch) => WriteCombining.commit(saves, batch),
      begin: Transactions.begin(store, reads),
      joined: Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome),
      projections: yield* DaemonStorage.make(store, options?.claimInterval ?? "500 millis"),
      listStreams: (tenantId, query) => Reads.listStreams(store, tenantId, query)
    }
    inFlightOf.set(storage, () => ({
      reads: reads.combiner.inFlight,
      saves: saves.combiner.inFlight,
      queued: reads.combiner.queue.length + saves.combiner.queue.length
    }))
    return storage
  })
