/**
 * node-postgres running effect-chronicle's own prepared statements on its own
 * schema: what effect-chronicle would cost with no library around its SQL.
 * The gap between this and effect-chronicle is client overhead; the gap
 * between this and "raw SQL" is what the schema and statements do more
 * (metadata, stream type, the transaction id index for gap-safe projections,
 * the daemon's notification).
 */
import pg from "pg"
import { EventStorePg, Projections } from "../../src/index.js"
import { singleStreamStatement, statements } from "../../src/pg/PgStorage.js"
import { type Contender, Conflict, poolSize, retryOnConflict } from "../contender.js"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Driver from "../../src/pg/driver.js"

const schema = `bench_rawchronicle_${process.pid}`
let pool: pg.Pool
const q = statements(`"${schema}"`)
// As the library sends them when no projection daemon listens: without the notification.
const any = { name: "rc_any", text: singleStreamStatement(`"${schema}"`, "any", false, false, true) }
const exact = { name: "rc_exact", text: singleStreamStatement(`"${schema}"`, "exact", false, false, true) }
const read = { name: "rc_read", text: q.readAll }
const payload = JSON.stringify({ by: 1 })

const save = (statement: { name: string; text: string }, id: string, expected: number) =>
  pool.query({ ...statement, values: [id, 1, expected, "Counter", "*DEFAULT*", "Incremented", payload, "{}"] })

// The read's row: one JSON text of [seq, version, type, data, metadata, timestamp, tenant] per
// event, folded to the total (as a command would) and the stream's version.
const versionOfRead = (rows: ReadonlyArray<{ readonly events: string | null }>) => {
  const events: Array<[number, number, string, { by: number }]> = rows[0].events === null ? [] : JSON.parse(rows[0].events)
  let total = 0
  for (const event of events) total += event[3].by
  void total
  return events.length === 0 ? 0 : events[events.length - 1][1]
}

const command = async (id: string) => {
  const { rows } = await pool.query({ ...read, values: [id, "*DEFAULT*"] })
  const result = await save(exact, id, versionOfRead(rows))
  if (result.rows.length === 0) throw new Conflict()
}

export const rawChronicle: Contender = {
  name: "raw SQL, chronicle's statements",
  setup: async (url) => {
    pool = new pg.Pool({ connectionString: url, max: poolSize, idleTimeoutMillis: 250 })
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await Effect.runPromise(Effect.provide(
      Effect.void,
      EventStorePg.layer({ schema }).pipe(Layer.provide(Projections.layer([])), Layer.provide(PgClient.layer({ url: Redacted.make(url) })))
    ))
  },
  teardown: async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
  },
  seed: async (ids, events) => {
    for (const id of ids) for (let i = 0; i < events; i++) await save(any, id, 0)
  },
  append: async (id) => {
    await save(any, id, 0)
  },
  command,
  commandWithRetry: retryOnConflict(command),
  isConflict: (e) => e instanceof Conflict
}

/**
 * effect-chronicle's statements as Effect programs and nothing else: each
 * operation one `runPromise` of the store driver's named prepared statements
 * (the read, then the save, for a command), on the same tables as
 * `rawChronicle`. The ceiling of any Effect program over these statements:
 * the gap between it and "raw SQL, chronicle's statements" is the fiber per
 * call and `@effect/sql-pg`'s async boundary; the gap between it and
 * effect-chronicle is the engine (session, unit of work, encoding, identity
 * map, metrics).
 */
let floor: ManagedRuntime.ManagedRuntime<SqlClient.SqlClient, unknown> | undefined
let driver: Driver.Driver | undefined
const prepared = <A extends object>(statement: { name: string; text: string }, values: ReadonlyArray<unknown>) =>
  Driver.prepared<A>(driver!, `${statement.name}_fx`, statement.text, values)
const effectSave = (statement: { name: string; text: string }, id: string, expected: number) =>
  prepared(statement, [id, 1, expected, "Counter", "*DEFAULT*", "Incremented", payload, "{}"])
const effectCommand = (id: string) =>
  floor!.runPromise(Effect.flatMap(prepared<{ events: string | null }>(read, [id, "*DEFAULT*"]), (rows) =>
    Effect.flatMap(
      effectSave(exact, id, versionOfRead(rows)),
      (saved) => saved.length === 0 ? Effect.fail(new Conflict()) : Effect.void
    )))

export const effectChronicleStatements: Contender = {
  name: "Effect, chronicle's statements, driver only",
  setup: async (url) => {
    floor = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(url), maxConnections: poolSize }))
    driver = await floor.runPromise(Effect.flatMap(SqlClient.SqlClient, (sql) => Driver.make(sql.withoutTransforms(), [`${read.name}_fx`])))
  },
  teardown: async () => {
    await floor?.dispose()
  },
  seed: (ids, events) => rawChronicle.seed(ids, events),
  append: async (id) => {
    await floor!.runPromise(effectSave(any, id, 0))
  },
  command: effectCommand,
  commandWithRetry: retryOnConflict(effectCommand),
  isConflict: (e) => e instanceof Conflict
}
