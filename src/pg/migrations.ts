/**
 * The PostgreSQL schema, as embedded migrations. They run in one transaction
 * under an advisory lock, so several processes starting at once apply each
 * migration exactly once.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { wrap } from "./failures.js"
import { quoteSchema } from "./statements.js"

/**
 * A migration: an id and the SQL for a given (quoted) schema name.
 *
 * @since 0.1.0
 */
export interface Migration {
  readonly id: number
  readonly name: string
  readonly sql: (schema: string) => string
}

/**
 * All migrations, in order.
 *
 * @since 0.1.0
 */
export const migrations: ReadonlyArray<Migration> = [
  {
    id: 1,
    name: "streams_and_events",
    sql: (s) => `
CREATE TABLE ${s}.streams (
  id          text        PRIMARY KEY,
  type        text        NOT NULL,
  version     bigint      NOT NULL,
  tenant_id   text        NOT NULL DEFAULT '*DEFAULT*',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  archived    boolean     NOT NULL DEFAULT false
);
CREATE TABLE ${s}.events (
  seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  stream_id   text        NOT NULL,
  version     bigint      NOT NULL,
  type        text        NOT NULL,
  stream_type text        NOT NULL,
  data        jsonb       NOT NULL,
  metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
  "timestamp" timestamptz NOT NULL DEFAULT now(),
  tenant_id   text        NOT NULL DEFAULT '*DEFAULT*',
  tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_tx_seq ON ${s}.events (tx_id, seq);
`
  },
  {
    id: 2,
    name: "projections",
    sql: (s) => `
CREATE TABLE ${s}.documents (
  projection         text        NOT NULL,
  projection_version int         NOT NULL,
  id                 text        NOT NULL,
  data               jsonb,
  stream_version     bigint,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (projection, projection_version, id)
);
CREATE TABLE ${s}.projection_progress (
  projection         text        NOT NULL,
  projection_version int         NOT NULL,
  tx_id              xid8        NOT NULL DEFAULT '0'::xid8,
  seq                bigint      NOT NULL DEFAULT 0,
  processed          bigint      NOT NULL DEFAULT 0,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (projection, projection_version)
);
`
  },
  {
    id: 3,
    name: "listeners",
    // Projection daemons that LISTEN register here; stores notify only while one is alive.
    sql: (s) => `
CREATE TABLE ${s}.listeners (
  id         text        PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
`
  },
  {
    id: 4,
    name: "tenant_identity",
    // A stream's identity becomes (tenant, id), in every key. Existing snapshot
    // documents take their stream's tenant (ids that name no stream, such as
    // multi-stream keys, stay in the default tenant, where they were written).
    sql: (s) => `
ALTER TABLE ${s}.streams DROP CONSTRAINT streams_pkey;
ALTER TABLE ${s}.streams ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE ${s}.events DROP CONSTRAINT events_stream_version;
ALTER TABLE ${s}.events ADD CONSTRAINT events_stream_version UNIQUE (tenant_id, stream_id, version);
ALTER TABLE ${s}.documents ADD COLUMN tenant_id text NOT NULL DEFAULT '*DEFAULT*';
UPDATE ${s}.documents d SET tenant_id = st.tenant_id FROM ${s}.streams st WHERE st.id = d.id;
ALTER TABLE ${s}.documents DROP CONSTRAINT documents_pkey;
ALTER TABLE ${s}.documents ADD PRIMARY KEY (projection, projection_version, tenant_id, id);
`
  },
  {
    id: 5,
    name: "commit_tokens",
    // One row per write-combined statement, written by it: after a lost answer
    // the store looks its token up to learn whether the statement committed
    // (and in which transaction), or writes the token first so that it never
    // will. Rows are only needed for minutes and are deleted after that.
    sql: (s) => `
CREATE TABLE ${s}.commits (
  id    text        PRIMARY KEY,
  tx_id xid8        DEFAULT pg_current_xact_id(),
  at    timestamptz NOT NULL DEFAULT now()
);
`
  },
  {
    id: 6,
    name: "subscriptions",
    // A subscription's position is a projection_progress row of version 0;
    // a stopped one keeps why in error. Dead letters keep the whole event, so
    // that they outlive an archived or deleted stream.
    sql: (s) => `
ALTER TABLE ${s}.projection_progress ADD COLUMN error text;
CREATE TABLE ${s}.dead_letters (
  subscription text        NOT NULL,
  seq          bigint      NOT NULL,
  tx_id        xid8        NOT NULL,
  stream_id    text        NOT NULL,
  version      bigint      NOT NULL,
  type         text        NOT NULL,
  stream_type  text        NOT NULL,
  data         jsonb       NOT NULL,
  metadata     jsonb,
  "timestamp"  timestamptz NOT NULL,
  tenant_id    text        NOT NULL,
  error        text        NOT NULL,
  at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subscription, seq)
);
`
  },
  {
    id: 7,
    name: "archived streams index",
    // Reads of the log ask once per statement whether any stream is archived
    // (and then which): a partial index holds only the archived ones.
    sql: (s) => `
CREATE INDEX IF NOT EXISTS streams_archived ON ${s}.streams (tenant_id, id) WHERE archived;
`
  }
]

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
