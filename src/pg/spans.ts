/**
 * Spans of the statements the PostgreSQL storage runs itself (its fast path
 * bypasses @effect/sql, whose spans they would have had), and what combined
 * statements tell the spans of the operations waiting on them.
 *
 * @since 0.2.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Tracer from "effect/Tracer"
import * as Tracing from "../internal/tracing.js"
import type { Driver } from "./driver.js"
import type { Statements } from "./statements.js"

/**
 * Told each statement span opened in its scope: a combined statement's
 * sender links its waiters' spans to the statement's.
 *
 * @since 0.2.0
 */
export const currentStatementObserver = FiberRef.unsafeMake<((span: Tracer.Span) => void) | undefined>(undefined)

const statements = new Map<string, string>()
/** The name of a prepared statement without its schema's prefix: what it does. */
export const statementOf = (name: string): string => {
  let statement = statements.get(name)
  if (statement === undefined) statements.set(name, statement = name.replace(/^ec_[0-9a-z]+_/, ""))
  return statement
}

const named = (statement: string) => ({
  "db.operation.name": statement,
  "db.query.summary": statement,
  "chronicle.statement": statement
})

/**
 * Runs a statement in a span of its own when a tracer is installed (the
 * statements of the fast path bypass @effect/sql, whose spans they would have
 * had): `sql.execute`, as @effect/sql names its own, with its attributes, the
 * statement's name and text, and no parameter value.
 *
 * @since 0.2.0
 */
export const statementSpan = <A, E, R>(
  driver: Driver,
  statement: string | (() => string),
  text: string,
  self: Effect.Effect<A, E, R>
) =>
  Effect.tracerWith((tracer) =>
    !Tracing.records(tracer) ? self : Effect.useSpan("sql.execute", {
      kind: "client",
      captureStackTrace: false,
      attributes: {
        ...driver.spanAttributes,
        ...named(typeof statement === "string" ? statement : statement()),
        "db.query.text": text
      }
    }, (span) =>
      Effect.flatMap(FiberRef.get(currentStatementObserver), (observer) => {
        observer?.(span)
        return Effect.tapError(self, (error) =>
          Effect.sync(() => {
            const code = ((error as { cause?: { code?: unknown } } | null)?.cause)?.code
            if (typeof code === "string") span.attribute("db.response.status_code", code)
            span.attribute("error.type", Tracing.tagOf(error) ?? "Error")
          }))
      }))
  )

/**
 * Runs a statement without parameters on `conn` (BEGIN, COMMIT, a savepoint)
 * in a statement span named as the text says (`begin`, `release_savepoint`).
 *
 * @since 0.2.0
 */
export const unprepared = (driver: Driver, conn: SqlConnection.Connection, text: string) =>
  statementSpan(driver, () => commandOf(text), text, conn.executeUnprepared(text, [], undefined))

// "RELEASE SAVEPOINT chronicle_save" is a release_savepoint.
const commandOf = (text: string) => text.replace(/\s+chronicle_\w+/g, "").trim().toLowerCase().replace(/\s+/g, "_")

/**
 * Runs one of the store's statements through @effect/sql, whose `sql.execute`
 * span then carries the statement's name (`chronicle.statement`), as ours do.
 *
 * @since 0.2.0
 */
export const query = <A extends object = any>(
  store: { readonly sql: SqlClient.SqlClient; readonly q: Statements },
  name: keyof Statements & string,
  params?: ReadonlyArray<unknown>
) => {
  const statement = store.sql.unsafe<A>(store.q[name] as string, params as Array<unknown> | undefined)
  return Effect.tracerWith((tracer) =>
    !Tracing.records(tracer)
      ? statement
      : Effect.annotateSpans(statement, { "chronicle.statement": name, "db.query.summary": name })
  )
}
