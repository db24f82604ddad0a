/**
 * The PostgreSQL schema, as embedded migrations. They run in one transaction
 * under an advisory lock, so several processes starting at once apply each
 * migration exactly once.
 *
 * @since 0.1.0
 */

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
  }
]
