/**
 * The PostgreSQL storage, over `@effect/sql`.
 *
 * A save of one stream is one statement and one round trip: a CTE bumps the
 * stream row only if its version matches, and inserts the events only if every
 * stream in the batch passed, so a losing writer never draws a sequence number.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { EventStoreError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import { migrations } from "./migrations.js"

/**
 * Options of the PostgreSQL storage.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The PostgreSQL schema the tables live in (default `chronicle`). */
  readonly schema?: string | undefined
}

/**
 * The SQLSTATE of a failed statement, if the driver gave one.
 *
 * @since 0.1.0
 */
export const sqlState = (error: SqlError): string | undefined => (error.cause as { code?: string } | undefined)?.code

const wrap = (message: string) => (error: SqlError) => new EventStoreError({ message, cause: error })

/**
 * Validates and quotes a schema name.
 *
 * @since 0.1.0
 */
export const quoteSchema = (schema: string): string => {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schema)) {
    throw new TypeError(`Invalid PostgreSQL schema name ${JSON.stringify(schema)}`)
  }
  return `"${schema}"`
}

const statements = (s: string) => ({
  read: `SELECT seq, stream_id, version, type, data, metadata, "timestamp", tenant_id
FROM ${s}.events
WHERE stream_id = $1 AND version >= $2 AND version <= $3
  AND date_trunc('milliseconds', "timestamp") <= $4
ORDER BY version`,
  // $1 ids, $2 aggregate types, $3 expected (-1: any), $4 event counts, $5 tenant,
  // $6..$10 the events (stream id, ordinal in its stream, type, data, metadata), $11 stream count.
  commit: `WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS i(id, agg, expected, n)
), upd AS (
  UPDATE ${s}.streams st SET version = st.version + i.n, updated_at = now()
  FROM input i
  WHERE st.id = i.id AND i.expected > 0 AND st.version = i.expected
  RETURNING st.id, st.version
), ins_new AS (
  INSERT INTO ${s}.streams AS st (id, type, version, tenant_id)
  SELECT id, agg, n, $5 FROM input WHERE expected = 0
  ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, type = EXCLUDED.type, updated_at = now()
  WHERE st.version = 0
  RETURNING st.id, st.version
), ins_any AS (
  INSERT INTO ${s}.streams AS st (id, type, version, tenant_id)
  SELECT id, agg, n, $5 FROM input WHERE expected < 0
  ON CONFLICT (id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = now()
  RETURNING st.id, st.version
), ok AS (
  SELECT id, version FROM upd UNION ALL SELECT id, version FROM ins_new UNION ALL SELECT id, version FROM ins_any
), ev AS (
  INSERT INTO ${s}.events (stream_id, version, type, data, metadata, tenant_id)
  SELECT e.stream_id, ok.version - i.n + e.ord, e.type, e.data::jsonb, e.meta::jsonb, $5
  FROM unnest($6::text[], $7::int8[], $8::text[], $9::text[], $10::text[])
    WITH ORDINALITY AS e(stream_id, ord, type, data, meta, pos)
  JOIN ok ON ok.id = e.stream_id
  JOIN input i ON i.id = e.stream_id
  WHERE (SELECT count(*) FROM ok) = $11
  ORDER BY e.pos
  RETURNING seq, stream_id, version, "timestamp"
)
SELECT id AS stream_id, version, NULL::bigint AS seq, NULL::timestamptz AS "timestamp" FROM ok
UNION ALL
SELECT stream_id, version, seq, "timestamp" FROM ev`,
  versions: `SELECT id, version FROM ${s}.streams WHERE id = ANY($1::text[])`,
  // Locks the stream row, creating a version-0 placeholder for a stream that
  // does not exist yet, so that a new stream can be locked too. A version-0
  // row means "no stream" everywhere.
  lock: `INSERT INTO ${s}.streams AS st (id, type, version, tenant_id) VALUES ($1, $2, 0, $3)
ON CONFLICT (id) DO UPDATE SET version = st.version
RETURNING st.version`
})

const farFuture = new Date("9999-12-31T00:00:00Z")

/**
 * Applies the embedded migrations to a schema, once, even when several
 * processes start at the same time.
 *
 * @since 0.1.0
 */
export const migrate = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = quoteSchema(schema)
    yield* sql.withTransaction(Effect.gen(function*() {
      // Serialises concurrent migrators: CREATE ... IF NOT EXISTS alone races on the catalogs.
      yield* sql.unsafe(`SELECT pg_advisory_xact_lock(hashtext('effect-chronicle:migrate'), hashtext($1))`, [schema])
      yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${s}`)
      yield* sql.unsafe(
        `CREATE TABLE IF NOT EXISTS ${s}.migrations (id int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
      )
      const done = yield* sql.unsafe<{ id: number }>(`SELECT id FROM ${s}.migrations`)
      const applied = new Set(done.map((row) => Number(row.id)))
      for (const migration of migrations) {
        if (applied.has(migration.id)) continue
        yield* sql.unsafe(migration.sql(s))
        yield* sql.unsafe(`INSERT INTO ${s}.migrations (id, name) VALUES ($1, $2)`, [migration.id, migration.name])
      }
    }))
  }).pipe(Effect.mapError(wrap(`Migrating the event store schema "${schema}" failed`)))

interface CommitRow {
  readonly stream_id: string
  readonly version: string | number
  readonly seq: string | number | null
  readonly timestamp: Date | null
}

/**
 * Creates the PostgreSQL storage over the `SqlClient` in context (tables must
 * exist: see `migrate`).
 *
 * @since 0.1.0
 */
export const make = (options?: Options) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const q = statements(quoteSchema(options?.schema ?? "chronicle"))

    const readStream = (id: string, options?: Storage.ReadOptions) =>
      sql.unsafe<{
        seq: string
        stream_id: string
        version: string
        type: string
        data: unknown
        metadata: Storage.StoredMetadata
        timestamp: Date
        tenant_id: string
      }>(q.read, [id, options?.fromVersion ?? 1, options?.toVersion ?? Number.MAX_SAFE_INTEGER, options?.toTimestamp ?? farFuture]).pipe(
        Effect.map((rows) =>
          rows.map((row): Storage.StoredEvent => ({
            streamId: row.stream_id,
            version: Number(row.version),
            sequence: Number(row.seq),
            type: row.type,
            data: row.data,
            metadata: row.metadata,
            timestamp: row.timestamp,
            tenantId: row.tenant_id
          }))
        ),
        Effect.mapError(wrap(`Reading stream "${id}" failed`))
      )

    const run = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, SqlError> =>
      Effect.gen(function*() {
        const ids: Array<string> = []
        const types: Array<string> = []
        const expected: Array<number> = []
        const counts: Array<number> = []
        const evStream: Array<string> = []
        const evOrd: Array<number> = []
        const evType: Array<string> = []
        const evData: Array<string> = []
        const evMeta: Array<string> = []
        for (const write of batch.streams) {
          ids.push(write.streamId)
          types.push(write.aggregateType)
          expected.push(write.expected === "any" ? -1 : write.expected)
          counts.push(write.events.length)
          write.events.forEach((event, i) => {
            evStream.push(write.streamId)
            evOrd.push(i + 1)
            evType.push(event.type)
            evData.push(JSON.stringify(event.data))
            evMeta.push(JSON.stringify(event.metadata))
          })
        }
        const rows = yield* sql.unsafe<CommitRow>(q.commit, [
          ids, types, expected, counts, batch.tenantId, evStream, evOrd, evType, evData, evMeta, ids.length
        ])
        const passed = new Map<string, number>()
        const appended = new Map<string, Array<Storage.AppendedEvent>>()
        for (const row of rows) {
          if (row.seq === null) {
            passed.set(row.stream_id, Number(row.version))
          } else {
            let list = appended.get(row.stream_id)
            if (list === undefined) appended.set(row.stream_id, list = [])
            list.push({ version: Number(row.version), sequence: Number(row.seq), timestamp: row.timestamp! })
          }
        }
        if (passed.size < batch.streams.length) {
          // Only the losing path pays for a second round trip, to report the real version.
          const failed = batch.streams.filter((w) => !passed.has(w.streamId))
          const actual = yield* sql.unsafe<{ id: string; version: string }>(q.versions, [failed.map((w) => w.streamId)])
          const found = new Map(actual.map((r) => [r.id, Number(r.version)]))
          return {
            _tag: "Conflicted",
            conflicts: failed.map((w) => ({
              streamId: w.streamId,
              expected: w.expected === "any" ? -1 : w.expected,
              actual: found.get(w.streamId) ?? 0
            }))
          } as const
        }
        return {
          _tag: "Committed",
          streams: batch.streams.map((w): Storage.CommittedStream => {
            const version = passed.get(w.streamId)!
            const events = (appended.get(w.streamId) ?? []).sort((a, b) => a.version - b.version)
            return { streamId: w.streamId, previousVersion: version - w.events.length, version, events }
          })
        } as const
      })

    class Rollback {
      constructor(readonly result: Storage.CommitResult) {}
    }

    // Several streams: the statement's partial updates must roll back with a
    // conflict, so they run in a transaction (a savepoint inside a caller's).
    const commit = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> =>
      (batch.streams.length === 1
        ? run(batch)
        : sql.withTransaction(
          Effect.flatMap(run(batch), (result) =>
            result._tag === "Conflicted" ? Effect.fail(new Rollback(result)) : Effect.succeed(result))
        ).pipe(Effect.catchIf((e): e is Rollback => e instanceof Rollback, (e) => Effect.succeed(e.result)))
      ).pipe(Effect.mapError((e) => wrap("Saving events failed")(e as SqlError)))

    const begin: Effect.Effect<Storage.Transaction, EventStoreError, Scope.Scope> = Effect.gen(function*() {
      const conn: SqlConnection.Connection = yield* sql.reserve
      yield* conn.executeUnprepared("BEGIN", [], undefined)
      let open = true
      yield* Effect.addFinalizer(() =>
        open ? Effect.ignore(conn.executeUnprepared("ROLLBACK", [], undefined)) : Effect.void
      )
      // Every statement of the transaction runs on its reserved connection.
      const inTx = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0] as const)

      const lock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        inTx(sql.withTransaction(Effect.zipRight(
          sql.unsafe(`SELECT set_config('lock_timeout', $1, true)`, [`${Math.max(1, Duration.toMillis(timeout))}ms`]),
          sql.unsafe(q.lock, [id, type, tenant])
        ))).pipe(
          Effect.as(true),
          Effect.catchIf((e) => sqlState(e) === "55P03", () => Effect.succeed(false)),
          Effect.mapError(wrap(`Locking stream "${id}" failed`))
        )

      const commit = (batch: Storage.CommitBatch) =>
        Effect.gen(function*() {
          const result = batch.streams.length === 0
            ? { _tag: "Committed", streams: [] } as const
            : yield* inTx(run(batch))
          open = false
          yield* conn.executeUnprepared(result._tag === "Committed" ? "COMMIT" : "ROLLBACK", [], undefined)
          return result
        }).pipe(Effect.mapError(wrap("Saving events failed")))

      return {
        readStream: (id, options) => inTx(readStream(id, options)),
        lock,
        commit
      } satisfies Storage.Transaction
    }).pipe(Effect.mapError(wrap("Opening a transaction failed")))

    return { readStream, commit, begin } satisfies Storage.Storage
  })
