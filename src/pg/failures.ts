/**
 * Failures of the PostgreSQL storage: the SQLSTATE of a failed statement,
 * which failures leave a write's outcome unknown, and their wrapping into
 * `EventStoreError`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import { EventStoreError } from "../Errors.js"

/**
 * The SQLSTATE of a failed statement, if the driver gave one.
 *
 * @since 0.1.0
 */
export const sqlState = (error: SqlError): string | undefined => (error.cause as { code?: string } | undefined)?.code

/**
 * Failures of writes whose connection broke after they were sent, before their
 * answer came: they may have committed.
 *
 * @internal
 */
export const outcomeUnknown = new WeakSet<SqlError>()

/**
 * An `EventStoreError` with `message` for a failed statement, saying so when
 * its outcome is unknown.
 *
 * @internal
 */
export const wrap = (message: string) => (error: SqlError) =>
  new EventStoreError({
    message: outcomeUnknown.has(error)
      ? `${message}: the connection was lost before the answer came, so the outcome is unknown`
      : message,
    cause: error
  })

/**
 * Whether a failure says the connection broke (no answer from the server):
 * the statement's outcome is then unknown, unlike an error the server sent.
 *
 * @internal
 */
export const connectionLost = (e: unknown) =>
  !(e instanceof EventStoreError) && typeof e === "object" && e !== null && (e as { _tag?: string })._tag === "SqlError" &&
  (sqlState(e as SqlError) === undefined || (sqlState(e as SqlError) ?? "").startsWith("08") ||
    sqlState(e as SqlError) === "57P01" || sqlState(e as SqlError) === "57P02" || sqlState(e as SqlError) === "57P03")

/**
 * A unique violation, deadlock or serialization failure while saving is a
 * conflict when the versions moved; read them after the rollback.
 *
 * @internal
 */
export const retryable = (e: unknown): e is SqlError =>
  e !== null && typeof e === "object" && (e as any)._tag === "SqlError" &&
  ["23505", "40P01", "40001"].includes(sqlState(e as SqlError) ?? "")

/**
 * A failed save as an `EventStoreError`.
 *
 * @internal
 */
export const toStoreError = (e: SqlError | EventStoreError) => e instanceof EventStoreError ? e : wrap("Saving events failed")(e)
