/**
 * What the modules of the PostgreSQL storage share: one value per store,
 * passed to their functions.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { Driver } from "./driver.js"
import type { PreparedNames, Statements } from "./statements.js"

/**
 * One store's client, schema, statements and driver.
 *
 * @since 0.1.0
 */
export interface Store {
  /** The client, without transforms. */
  readonly sql: SqlClient.SqlClient
  readonly schema: string
  /** The schema, quoted. */
  readonly quoted: string
  /** The SQL of the schema. */
  readonly q: Statements
  readonly names: PreparedNames
  readonly driver: Driver
  /** The channel commits notify, while `listeners.listening`. */
  readonly channel: string
  /** Whether some projection daemon listens (refreshed every second). */
  readonly listeners: { listening: boolean }
  /** The single-stream saves' statements, by variant, built as they are first needed. */
  readonly singleStatements: Map<string, { readonly name: string; readonly text: string }>
}

/**
 * The channel a commit notifies: none while no daemon listens.
 *
 * @since 0.1.0
 */
export const notifyTo = (store: Store) => store.listeners.listening ? store.channel : null
