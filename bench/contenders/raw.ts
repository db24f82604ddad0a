/**
 * The ceiling: node-postgres with the best single-statement shapes, sent as
 * named prepared statements, and no library at all.
 */
import pg from "pg"
import { type Contender, Conflict, poolSize, retryOnConflict } from "../contender.js"

const schema = `bench_raw_${process.pid}`
let pool: pg.Pool

const appendAny = {
  name: "raw_append_any",
  text: `WITH s AS (
  INSERT INTO ${schema}.streams (id, version) VALUES ($1, 1)
  ON CONFLICT (id) DO UPDATE SET version = ${schema}.streams.version + 1
  RETURNING version)
INSERT INTO ${schema}.events (stream_id, version, type, data) SELECT $1, s.version, 'Incremented', $2::jsonb FROM s`
}
const appendExpected = {
  name: "raw_append_expected",
  text: `WITH s AS (UPDATE ${schema}.streams SET version = version + 1 WHERE id = $1 AND version = $2 RETURNING version)
INSERT INTO ${schema}.events (stream_id, version, type, data) SELECT $1, s.version, 'Incremented', $3::jsonb FROM s`
}
const read = { name: "raw_read", text: `SELECT version, data FROM ${schema}.events WHERE stream_id = $1 ORDER BY version` }
const lock = { name: "raw_lock", text: `SELECT version FROM ${schema}.streams WHERE id = $1 FOR UPDATE` }
const insert = {
  name: "raw_insert",
  text: `INSERT INTO ${schema}.events (stream_id, version, type, data) VALUES ($1, $2, 'Incremented', $3::jsonb)`
}
const bump = { name: "raw_bump", text: `UPDATE ${schema}.streams SET version = $2 WHERE id = $1` }
const bumpExpected = { name: "raw_bump_expected", text: `UPDATE ${schema}.streams SET version = $2 WHERE id = $1 AND version = $3` }

const payload = JSON.stringify({ by: 1 })

const fold = (rows: ReadonlyArray<{ version: string; data: { by: number } }>) => {
  let total = 0
  for (const row of rows) total += row.data.by
  return { total, version: rows.length === 0 ? 0 : Number(rows[rows.length - 1].version) }
}

const command = async (id: string) => {
  const { rows } = await pool.query({ ...read, values: [id] })
  const { version } = fold(rows)
  const result = await pool.query({ ...appendExpected, values: [id, version, payload] })
  if (result.rowCount === 0) throw new Conflict()
}

export const raw: Contender & { readonly fetch: (id: string) => Promise<number> } = {
  fetch: async (id) => {
    const { rows } = await pool.query({ ...read, values: [id] })
    return fold(rows).total
  },
  name: "raw SQL",
  setup: async (url) => {
    pool = new pg.Pool({ connectionString: url, max: poolSize, idleTimeoutMillis: 250 })
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema};
CREATE TABLE ${schema}.streams (id text PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE ${schema}.events (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream_id text NOT NULL,
  version bigint NOT NULL, type text NOT NULL, data jsonb NOT NULL, "timestamp" timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream_id, version));`)
  },
  teardown: async () => {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await pool.end()
  },
  seed: async (ids, events) => {
    for (const id of ids) {
      await pool.query(
        `WITH s AS (INSERT INTO ${schema}.streams (id, version) VALUES ($1, $2) RETURNING id)
INSERT INTO ${schema}.events (stream_id, version, type, data) SELECT $1, v, 'Incremented', $3::jsonb FROM generate_series(1, $2::int) v`,
        [id, events, payload]
      )
    }
  },
  append: async (id) => {
    await pool.query({ ...appendAny, values: [id, payload] })
  },
  command,
  commandWithRetry: retryOnConflict(command),
  commandExclusive: async (id) => {
    const client = await pool.connect()
    try {
      await client.query("BEGIN")
      await client.query({ ...lock, values: [id] })
      const { rows } = await client.query({ ...read, values: [id] })
      const { version } = fold(rows)
      await client.query({ ...insert, values: [id, version + 1, payload] })
      await client.query({ ...bump, values: [id, version + 1] })
      await client.query("COMMIT")
    } catch (e) {
      await client.query("ROLLBACK").catch(() => {})
      throw e
    } finally {
      client.release()
    }
  },
  isConflict: (e) => e instanceof Conflict
}

/**
 * The same command as one transaction of plain statements (BEGIN, read,
 * INSERT, UPDATE, COMMIT): the one-transaction-per-command figure the
 * write-combining target is set against. It shares the raw contender's tables.
 */
export const rawTransactional: Contender = {
  name: "raw SQL, a transaction per command",
  setup: async () => {},
  teardown: async () => {},
  seed: (ids, events) => raw.seed(ids, events),
  append: (id) => raw.append(id),
  command: async (id) => {
    const client = await pool.connect()
    try {
      await client.query("BEGIN")
      const { rows } = await client.query({ ...read, values: [id] })
      const { version } = fold(rows)
      await client.query({ ...insert, values: [id, version + 1, payload] })
      const bumped = await client.query({ ...bumpExpected, values: [id, version + 1, version] })
      if (bumped.rowCount === 0) throw new Conflict()
      await client.query("COMMIT")
    } catch (e) {
      await client.query("ROLLBACK").catch(() => {})
      throw e instanceof Error && (e as { code?: string }).code === "23505" ? new Conflict() : e
    } finally {
      client.release()
    }
  },
  commandWithRetry: (id) => raw.commandWithRetry(id),
  isConflict: (e) => e instanceof Conflict
}
