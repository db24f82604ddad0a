/**
 * The SQL of the PostgreSQL storage, per schema: every statement's text, and
 * the names its prepared statements and notifications go by.
 *
 * @since 0.1.0
 */

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

// Timestamps travel as epoch milliseconds (a float8 is cheaper for the
// driver to read than a timestamptz string) and empty metadata as NULL.
const millis = (column: string) => `(extract(epoch FROM ${column}) * 1000)::float8`
const metadataOf = (column: string) => `NULLIF(${column}, '{}'::jsonb)`
// [seq, version, type, data, metadata or null, epoch ms, tenant] per event, in version order.
const eventsJson = `'[' || string_agg(concat('[', seq, ',', version, ',', to_json(type), ',', data, ',',
  coalesce(${metadataOf("metadata")}::text, 'null'), ',', ${millis(`"timestamp"`)}, ',', to_json(tenant_id), ']'), ',' ORDER BY version) || ']'`

/**
 * The single-stream save, the common case, as a small statement that
 * PostgreSQL plans cheaply (the generic batch statement costs more to plan
 * than to run). $1 stream, $2 event count, $3 expected version (unused for
 * "any"), $4 aggregate type, $5 tenant, $6..$8 event types, data, metadata;
 * with a snapshot $9 projection names, $10 their versions, $11 the data;
 * then the notify channel.
 *
 * A builder, not texts: its variants (the expected version's kind, with or
 * without a snapshot, a notification, more than one event) are each a
 * statement of its own, prepared under its own name, and written out they
 * would be two dozen near copies.
 *
 * @internal
 */
export const singleStreamStatement = (
  s: string,
  expected: "exact" | "new" | "any",
  snapshot: boolean,
  notify: boolean,
  oneEvent = false
) => {
  const stream = expected === "exact"
    ? `UPDATE ${s}.streams SET version = version + $2, updated_at = now() WHERE tenant_id = $5 AND id = $1 AND version = $3::bigint AND NOT archived RETURNING version`
    : `INSERT INTO ${s}.streams AS st (id, type, version, tenant_id) VALUES ($1, $4, $2, $5)
  ON CONFLICT (tenant_id, id) DO UPDATE SET ${expected === "new" ? "version = EXCLUDED.version, type = EXCLUDED.type" : "version = st.version + EXCLUDED.version"}, updated_at = now()
  ${expected === "new" ? "WHERE st.version = 0 AND $3::bigint = 0" : "WHERE $3::bigint IS NOT NULL AND NOT st.archived"}
  RETURNING st.version`
  const channel = snapshot ? "$12" : "$9"
  // One event (the common case) takes scalars: no arrays to build, unnest and sort.
  const events = oneEvent
    ? `SELECT $1, s.version, $6::text, $4, $7::jsonb, $8::jsonb, $5, clock_timestamp() FROM s`
    : `SELECT $1, s.version - $2 + e.ord, e.type, $4, e.data::jsonb, e.meta::jsonb, $5, clock_timestamp()
  FROM s, unnest($6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS e(type, data, meta, ord)
  ORDER BY e.ord`
  return `WITH s AS (${stream}
), ev AS (
  INSERT INTO ${s}.events (stream_id, version, type, stream_type, data, metadata, tenant_id, "timestamp")
  ${events}
  RETURNING seq, version, "timestamp"
)${snapshot ? `, docs AS (
  INSERT INTO ${s}.documents AS d (projection, projection_version, tenant_id, id, data, stream_version)
  SELECT p.name, p.version, $5, $1, $11::jsonb, s.version FROM s, unnest($9::text[], $10::int4[]) AS p(name, version)
  ON CONFLICT (projection, projection_version, tenant_id, id) DO UPDATE
  SET data = EXCLUDED.data, stream_version = EXCLUDED.stream_version, updated_at = now()
)` : ""}
${oneEvent ? "" : `SELECT NULL::bigint AS seq, version, NULL::float8 AS "timestamp" FROM s
UNION ALL
`}SELECT seq, version, ${millis(`"timestamp"`)} AS "timestamp" FROM ev${notify ? `
UNION ALL
SELECT NULL, NULL, NULL FROM (SELECT pg_notify(${channel}, 'append')) n WHERE EXISTS (SELECT FROM ev)` : ""}`
}

// The batch save. $1 ids, $2 aggregate types, $3 expected (-1: any), $4 event counts, $5 tenant,
// $6..$10 the events (stream id, ordinal in its stream, type, data, metadata), $11 stream count,
// $12..$17 documents to upsert (projection, version, tenant, id, data, stream version), $18 notify channel;
// with `each`, $19 the statement's commit token.
const commitStatement = (s: string, each: boolean) => {
  // A builder rather than two texts: the variants share every CTE but three
  // pieces, and two copies of the rest would drift apart. The differences:
  // - `fence`: with `each`, the token $19 is written first (nothing, without).
  // - `fenced`: with `each`, the input is empty unless the fence wrote the token.
  // - `passes`: all or nothing (every stream passed), or with `each` each
  //   stream on its own (the events and documents of those in `ok` go in).
  const { fence, fenced, passes } = each
    ? {
      fence: `fence AS (
  INSERT INTO ${s}.commits (id) VALUES ($19) ON CONFLICT (id) DO NOTHING RETURNING 1
), `,
      fenced: "\n  WHERE EXISTS (SELECT FROM fence)",
      passes: "$11::int > 0"
    }
    : { fence: "", fenced: "", passes: "(SELECT count(*) FROM ok) = $11" }
  return `WITH ${fence}input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS i(id, agg, expected, n)${fenced}
), upd AS (
  UPDATE ${s}.streams st SET version = st.version + i.n, updated_at = now()
  FROM input i
  WHERE st.tenant_id = $5 AND st.id = i.id AND i.expected > 0 AND st.version = i.expected AND NOT st.archived
  RETURNING st.id, st.version
), ins_new AS (
  INSERT INTO ${s}.streams AS st (id, type, version, tenant_id)
  SELECT id, agg, n, $5 FROM input WHERE expected = 0
  ON CONFLICT (tenant_id, id) DO UPDATE SET version = EXCLUDED.version, type = EXCLUDED.type, updated_at = now()
  WHERE st.version = 0
  RETURNING st.id, st.version
), ins_any AS (
  INSERT INTO ${s}.streams AS st (id, type, version, tenant_id)
  SELECT id, agg, n, $5 FROM input WHERE expected < 0
  ON CONFLICT (tenant_id, id) DO UPDATE SET version = st.version + EXCLUDED.version, updated_at = now()
  WHERE NOT st.archived
  RETURNING st.id, st.version
), ok AS (
  SELECT id, version FROM upd UNION ALL SELECT id, version FROM ins_new UNION ALL SELECT id, version FROM ins_any
), ev AS (
  INSERT INTO ${s}.events (stream_id, version, type, stream_type, data, metadata, tenant_id, "timestamp")
  SELECT e.stream_id, ok.version - i.n + e.ord, e.type, i.agg, e.data::jsonb, e.meta::jsonb, $5, clock_timestamp()
  FROM unnest($6::text[], $7::int8[], $8::text[], $9::text[], $10::text[])
    WITH ORDINALITY AS e(stream_id, ord, type, data, meta, pos)
  JOIN ok ON ok.id = e.stream_id
  JOIN input i ON i.id = e.stream_id
  WHERE ${passes}
  ORDER BY e.pos
  RETURNING seq, stream_id, version, "timestamp"
), docs AS (
  INSERT INTO ${s}.documents AS d (projection, projection_version, tenant_id, id, data, stream_version)
  SELECT p, v, tn, k, x::jsonb, sv
  FROM unnest($12::text[], $13::int4[], $14::text[], $15::text[], $16::text[], $17::int8[]) AS t(p, v, tn, k, x, sv)
  WHERE ${passes}
  ON CONFLICT (projection, projection_version, tenant_id, id) DO UPDATE
  SET data = EXCLUDED.data, stream_version = EXCLUDED.stream_version, updated_at = now()
  RETURNING 1
)
SELECT id AS stream_id, version, NULL::bigint AS seq, NULL::float8 AS "timestamp" FROM ok
UNION ALL
SELECT stream_id, version, seq, ${millis(`"timestamp"`)} FROM ev
UNION ALL
SELECT NULL, NULL, NULL, NULL FROM (SELECT pg_notify($18, 'append')) n WHERE $18::text IS NOT NULL AND EXISTS (SELECT FROM ev)`
}

// A stream's events for a fold that builds no envelope (readFold, readManyFold), as one JSON text: [version, type, data] per event.
const foldJson = (e: string) =>
  `'[' || string_agg(concat('[', ${e}version, ',', to_json(${e}type), ',', ${e}data, ']'), ',' ORDER BY ${e}version) || ']'`
// Whether the tenant's stream is archived, as a boolean column.
const archivedNow = (s: string, tenant: string, id: string) =>
  `coalesce((SELECT st.archived FROM ${s}.streams st WHERE st.tenant_id = ${tenant} AND st.id = ${id}), false)`

// Whether the stream of the event row `e` is archived: a primary-key probe.
// The first EXISTS, uncorrelated, runs once per statement (on the partial
// index of archived streams, migration 7): while no stream is archived, no
// event of a page pays for its probe.
const archivedOf = (s: string, e: string) =>
  `(EXISTS (SELECT FROM ${s}.streams WHERE archived) AND EXISTS (SELECT FROM ${s}.streams st WHERE st.tenant_id = ${e}.tenant_id AND st.id = ${e}.stream_id AND st.archived))`

// What projection daemons and subscriptions run: progress, the log, leadership, wake-ups, documents.
const daemonStatements = (s: string) => ({
  progress: `SELECT tx_id::text AS tx_id, seq, processed, error FROM ${s}.projection_progress
WHERE projection = $1 AND projection_version = $2`,
  saveProgress: `INSERT INTO ${s}.projection_progress AS p (projection, projection_version, tx_id, seq, processed, error)
VALUES ($1, $2, $3::xid8, $4, $5, $6)
ON CONFLICT (projection, projection_version) DO UPDATE
SET tx_id = EXCLUDED.tx_id, seq = EXCLUDED.seq, processed = EXCLUDED.processed, error = EXCLUDED.error, updated_at = now()`,
  // A replay can dead-letter an event again: the newer error wins.
  deadLetter: `INSERT INTO ${s}.dead_letters
  (subscription, seq, tx_id, stream_id, version, type, stream_type, data, metadata, "timestamp", tenant_id, error, at)
VALUES ($1, $2, $3::xid8, $4, $5, $6, $7, $8::jsonb, $9::jsonb, to_timestamp($10::float8 / 1000), $11, $12, to_timestamp($13::float8 / 1000))
ON CONFLICT (subscription, seq) DO UPDATE SET error = EXCLUDED.error, at = EXCLUDED.at`,
  deadLetters: `SELECT seq, stream_id, version, type, stream_type, data, ${metadataOf("metadata")} AS metadata,
  ${millis(`"timestamp"`)} AS "timestamp", tenant_id, tx_id::text AS tx_id, error, ${millis("at")} AS at
FROM ${s}.dead_letters WHERE subscription = $1 ORDER BY tx_id, seq`,
  deleteDocuments: `DELETE FROM ${s}.documents WHERE projection = $1 AND projection_version = $2`,
  deleteProgress: `DELETE FROM ${s}.projection_progress WHERE projection = $1 AND projection_version = $2`,
  // Gap-safe: only transactions older than every one still running, so no
  // later commit can ever land before the checkpoint.
  // ORDER BY names the table's columns: a bare tx_id would be the text output
  // column, which orders "100" before "99" (and cannot use the index).
  readAfter: `SELECT e.seq, e.stream_id, e.version, e.type, e.stream_type, e.data, ${metadataOf("e.metadata")} AS metadata,
  ${millis(`e."timestamp"`)} AS "timestamp", e.tenant_id, e.tx_id::text AS tx_id, ${archivedOf(s, "e")} AS archived
FROM ${s}.events e
WHERE (e.tx_id, e.seq) > ($1::xid8, $2::bigint) AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.tx_id, e.seq
LIMIT $3`,
  // Any reader's page of the log: the next $3 events (in index order, so the
  // filter cannot turn the read into a sort of the whole log), of which those
  // passing the filter (a NULL filter takes everything), then one row for the
  // last event looked at and how many were.
  readLog: `WITH scanned AS MATERIALIZED (
  SELECT e.seq, e.stream_id, e.version, e.type, e.stream_type, e.data, e.metadata, e."timestamp", e.tenant_id, e.tx_id
  FROM ${s}.events e
  WHERE (e.tx_id, e.seq) > ($1::xid8, $2::bigint) AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
  ORDER BY e.tx_id, e.seq
  LIMIT $3
)
SELECT s.seq, s.stream_id, s.version, s.type, s.stream_type, s.data, ${metadataOf("s.metadata")} AS metadata,
  ${millis(`s."timestamp"`)} AS "timestamp", s.tenant_id, s.tx_id::text AS tx_id, NULL::bigint AS scanned, s.tx_id AS tx
FROM scanned s
WHERE ($4::text IS NULL OR s.tenant_id = $4)
  AND ($5::text[] IS NULL OR s.type = ANY($5::text[]))
  AND ($6::text[] IS NULL OR s.stream_type = ANY($6::text[]))
  AND ($7::bool OR NOT ${archivedOf(s, "s")})
UNION ALL
SELECT l.seq, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, l.tx_id::text, (SELECT count(*) FROM scanned), l.tx_id
FROM (SELECT seq, tx_id FROM scanned ORDER BY tx_id DESC, seq DESC LIMIT 1) AS l
ORDER BY scanned NULLS FIRST, tx, seq`,
  head: `SELECT e.tx_id::text AS tx_id, e.seq FROM ${s}.events e ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1`,
  settled: `SELECT $1::xid8 < pg_snapshot_xmin(pg_current_snapshot()) AS settled`,
  countAfter: `SELECT count(*) AS n FROM ${s}.events WHERE (tx_id, seq) > ($1::xid8, $2::bigint)`,
  tryLock: `SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok`,
  // Leadership is ($1, $2); a takeover waiting for it holds ($3, $2). A claim
  // gives way to a waiting takeover, and a leader asks whether one waits, by
  // trying that lock shared for the length of its statement.
  tryLockGivingWay: `SELECT CASE WHEN pg_try_advisory_xact_lock_shared(hashtext($3), hashtext($2))
  THEN pg_try_advisory_lock(hashtext($1), hashtext($2)) ELSE false END AS ok`,
  asked: `SELECT NOT pg_try_advisory_xact_lock_shared(hashtext($1), hashtext($2)) AS asked`,
  wake: `SELECT pg_notify($1, 'takeover')`,
  listening: `SELECT EXISTS (SELECT 1 FROM ${s}.listeners WHERE expires_at > now()) AS listening`,
  register: `INSERT INTO ${s}.listeners (id, expires_at) VALUES ($1, now() + interval '30 seconds')
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at`,
  unregister: `DELETE FROM ${s}.listeners WHERE id = $1`,
  unlock: `SELECT pg_advisory_unlock(hashtext($1), hashtext($2))`,
  upsertDocuments: `INSERT INTO ${s}.documents AS d (projection, projection_version, tenant_id, id, data, stream_version)
SELECT p, v, tn, k, x::jsonb, sv
FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[]) AS t(p, v, tn, k, x, sv)
ON CONFLICT (projection, projection_version, tenant_id, id) DO UPDATE
SET data = EXCLUDED.data, stream_version = EXCLUDED.stream_version, updated_at = now()`
})

/** @internal the SQL of a (quoted) schema, also used by the benchmark to measure its shapes. */
export const statements = (s: string) => ({
  // A stream's events come back as one JSON text (one array per event): node-postgres
  // then parses one column of one row instead of seven per event, which halves
  // the Node CPU of a read (measured: 60 against 100 us for 20 events).
  // Each also tells whether the stream is archived: a primary-key probe in
  // the same statement, so a fetch for writing refuses one without a round trip.
  read: `SELECT ${eventsJson} AS events, ${archivedNow(s, "$5", "$1")} AS archived
FROM ${s}.events
WHERE tenant_id = $5 AND stream_id = $1 AND version >= $2 AND version <= $3
  AND date_trunc('milliseconds', "timestamp") <= $4`,
  readAll: `SELECT ${eventsJson} AS events, ${archivedNow(s, "$2", "$1")} AS archived
FROM ${s}.events
WHERE tenant_id = $2 AND stream_id = $1`,
  readFold: `SELECT ${foldJson("")} AS events, ${archivedNow(s, "$2", "$1")} AS archived
FROM ${s}.events
WHERE tenant_id = $2 AND stream_id = $1`,
  readFrom: `SELECT ${eventsJson} AS events, ${archivedNow(s, "$3", "$1")} AS archived
FROM ${s}.events
WHERE tenant_id = $3 AND stream_id = $1 AND version >= $2`,
  // Read-combining: several streams, each from a version, in one statement;
  // one row per request (by its ordinal) that found events.
  readMany: `SELECT r.ord, ${eventsJson} AS events, ${archivedNow(s, "r.tenant", "r.id")} AS archived
FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY AS r(id, from_version, tenant, ord)
JOIN ${s}.events ON tenant_id = r.tenant AND stream_id = r.id AND version >= r.from_version
GROUP BY r.ord, r.tenant, r.id`,
  readManyFold: `SELECT r.ord, ${foldJson("e.")} AS events, ${archivedNow(s, "r.tenant", "r.id")} AS archived
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(id, tenant, ord) JOIN ${s}.events e ON e.tenant_id = r.tenant
  AND e.stream_id = r.id GROUP BY r.ord, r.tenant, r.id`,
  commit: commitStatement(s, false),
  // Write-combining: the same statement, each stream passing or failing on its
  // own, behind a fence: its token ($19) is written first, and nothing else is
  // if the token is already there (written by the look-up after a lost answer).
  commitEach: commitStatement(s, true),
  snapshot: `WITH d AS (
  SELECT data, stream_version, projection_version FROM ${s}.documents
  WHERE projection = $2 AND projection_version = ANY($3::int4[]) AND tenant_id = $4 AND id = $1 AND data IS NOT NULL
  ORDER BY projection_version DESC LIMIT 1
)
SELECT true AS snapshot, d.projection_version AS seq, d.stream_version AS version, NULL::text AS type, d.data,
  NULL::jsonb AS metadata, NULL::float8 AS "timestamp", NULL::text AS tenant_id FROM d
UNION ALL
SELECT false, e.seq, e.version, e.type, e.data, ${metadataOf("e.metadata")}, ${millis(`e."timestamp"`)}, e.tenant_id FROM ${s}.events e
WHERE e.tenant_id = $4 AND e.stream_id = $1 AND e.version > coalesce((SELECT stream_version FROM d), 0)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ${s}.streams st WHERE st.tenant_id = $4 AND st.id = $1 AND st.archived`,
  documents: `SELECT projection, projection_version, tenant_id, id, data, stream_version FROM ${s}.documents
WHERE (projection, projection_version, tenant_id, id) IN (SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[]))
  AND data IS NOT NULL`,
  // Placeholders (data NULL) make concurrent first writers of one document queue on its row.
  placeholders: `INSERT INTO ${s}.documents (projection, projection_version, tenant_id, id, data)
SELECT * , NULL::jsonb FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING`,
  lockDocuments: `SELECT projection, projection_version, tenant_id, id, data, stream_version FROM ${s}.documents
WHERE (projection, projection_version, tenant_id, id) IN (SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[]))
ORDER BY projection, projection_version, tenant_id, id FOR UPDATE`,
  ...daemonStatements(s),
  // Streams with events (a version-0 row is a lock placeholder), newest first by their first event;
  // $3 a cursor stream: only streams older than it (none when it names no stream).
  listStreams: `SELECT st.id, st.type, st.version, st.archived, f.seq, ${millis(`f."timestamp"`)} AS created, ${millis(`l."timestamp"`)} AS updated
FROM ${s}.streams st
JOIN ${s}.events f ON f.tenant_id = st.tenant_id AND f.stream_id = st.id AND f.version = 1
JOIN ${s}.events l ON l.tenant_id = st.tenant_id AND l.stream_id = st.id AND l.version = st.version
WHERE st.tenant_id = $1 AND st.version > 0 AND ($2::text IS NULL OR st.type = $2)
  AND ($3::text IS NULL OR f.seq < (SELECT seq FROM ${s}.events WHERE tenant_id = $1 AND stream_id = $3 AND version = 1))
ORDER BY f.seq DESC OFFSET $4 LIMIT $5`,
  versions: `SELECT id, version, archived FROM ${s}.streams WHERE tenant_id = $2 AND id = ANY($1::text[])`,
  // Archiving, after the session's events in its transaction: a stream with no
  // events (none, or a lock's version-0 placeholder) is left alone.
  archive: `UPDATE ${s}.streams SET archived = true, updated_at = now()
WHERE tenant_id = $2 AND id = ANY($1::text[]) AND version > 0 AND NOT archived`,
  // After a lost answer: writing the token first means the statement never
  // committed (its fence now stops it); finding it, the events of its transaction.
  claimToken: `INSERT INTO ${s}.commits (id, tx_id) VALUES ($1, NULL) ON CONFLICT (id) DO NOTHING RETURNING 1`,
  tokenTx: `SELECT tx_id::text AS tx_id FROM ${s}.commits WHERE id = $1`,
  committedBy: `SELECT e.stream_id, e.version, e.seq, ${millis(`e."timestamp"`)} AS "timestamp" FROM ${s}.events e
WHERE e.tx_id = $1::xid8 AND e.tenant_id = $2`,
  pruneTokens: `DELETE FROM ${s}.commits WHERE at < now() - interval '10 minutes'`,
  lockRows: `SELECT 1 FROM ${s}.streams WHERE tenant_id = $2 AND id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
  // Locks the stream row: an existing one FOR UPDATE (no new row version); for
  // a stream that does not exist yet, an upsert of a version-0 placeholder, so
  // that a new stream can be locked too (a version-0 row means "no stream"
  // everywhere). Then the lock time-out goes back to $4 once the row is locked:
  // the projection of the row runs after the statement that waited for it.
  lock: `WITH existing AS (
  SELECT version FROM ${s}.streams WHERE tenant_id = $3 AND id = $1 FOR UPDATE
), created AS (
  INSERT INTO ${s}.streams AS st (id, type, version, tenant_id)
  SELECT $1, $2, 0, $3 WHERE NOT EXISTS (SELECT FROM existing)
  ON CONFLICT (tenant_id, id) DO UPDATE SET version = st.version
  RETURNING st.version
), l AS (
  SELECT version FROM existing UNION ALL SELECT version FROM created
)
SELECT version, set_config('lock_timeout', $4, true) AS lock_timeout FROM l`
})

/**
 * The SQL of a schema.
 *
 * @since 0.1.0
 */
export type Statements = ReturnType<typeof statements>

/**
 * The channel a commit notifies (at commit time) for projection daemons to wake up.
 *
 * @since 0.1.0
 */
export const notifyChannel = (schema: string) => {
  const channel = `chronicle_${schema}`
  // PostgreSQL refuses channel names of 64 bytes or more.
  return channel.length <= maxIdentifier ? channel : `chronicle_${shortHash(schema)}`
}

// Identifiers (statement and channel names) longer than this are cut by PostgreSQL.
const maxIdentifier = 63

// A stable 53-bit hash (cyrb53) in base 36: short names that stay distinct per schema.
const shortHash = (text: string) => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)
}

/**
 * The name a store's prepared statement goes by on a connection: short enough
 * for PostgreSQL (which would cut a long schema's names to the same 63 bytes)
 * and distinct per schema, since stores of several schemas share connections.
 *
 * @since 0.1.0
 */
export const statementName = (schema: string, statement: string) => `ec_${shortHash(schema)}_${statement}`

/**
 * The names of a schema's prepared statements (the single-stream saves name
 * theirs as they are built).
 *
 * @since 0.1.0
 */
export const preparedNames = (schema: string) => ({
  commit: statementName(schema, "commit"),
  commitEach: statementName(schema, "commit_each"),
  read: statementName(schema, "read"),
  readAll: statementName(schema, "read_all"),
  readFrom: statementName(schema, "read_from"),
  readFold: statementName(schema, "read_fold"),
  readMany: statementName(schema, "read_many"),
  readManyFold: statementName(schema, "read_many_fold"),
  snapshot: statementName(schema, "snapshot"),
  lock: statementName(schema, "lock")
})

/**
 * The names of a schema's prepared statements.
 *
 * @since 0.1.0
 */
export type PreparedNames = ReturnType<typeof preparedNames>
