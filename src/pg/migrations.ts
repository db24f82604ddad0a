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
  data        jsonb       NOT NULL,
  metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
  "timestamp" timestamptz NOT NULL DEFAULT now(),
  tenant_id   text        NOT NULL DEFAULT '*DEFAULT*',
  tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_tx_seq ON ${s}.events (tx_id, seq);
`
  }
]
