/**
 * Emmett 0.42 (`@event-driven-io/emmett` + `@event-driven-io/emmett-postgresql`)
 * as a benchmark contender.
 *
 * - Store: `getPostgreSQLEventStore(url, { connectionOptions: { pool } })`.
 *   Emmett has no schema option: its tables (`emt_streams`, `emt_messages`,
 *   ...), functions (`emt_append_to_stream`, ...) and dumbo's
 *   `dmb_migrations` are created unqualified, so they land in the first schema
 *   of the `search_path`. We hand Emmett our own `pg.Pool` whose connections
 *   run with `search_path=bench_emmett`, a schema dropped and recreated by
 *   `setup`.
 * - `append`: `appendToStream(id, [event])`, no expected version.
 * - `command` / `commandWithRetry`: Emmett's `CommandHandler` (aggregateStream,
 *   decide, appendToStream with `expectedStreamVersion` = the version read, all
 *   on one connection via `withSession`). It does not retry unless told to;
 *   `command` passes `NoRetries`, `commandWithRetry` retries version conflicts
 *   without limit.
 * - `fetch` (extra, like the other contenders'): `aggregateStream`.
 * - Caveat: Emmett's append without an expected version is not a blind
 *   append: `emt_append_to_stream` reads the stream's position and updates
 *   `emt_streams` where the position is still that one, so concurrent appends
 *   to one stream fail with `ExpectedVersionConflictError` (counted as
 *   conflicts by `isConflict`).
 * - No exclusive (row-locked) command: Emmett has none.
 */
import {
  CommandHandler,
  type AsyncRetryOptions,
  type Event,
  isExpectedVersionConflictError,
  NoRetries
} from "@event-driven-io/emmett"
import { getPostgreSQLEventStore, type PostgresEventStore } from "@event-driven-io/emmett-postgresql"
import { setNodePostgresTypeParser } from "@event-driven-io/dumbo"
import pg from "pg"
import { type Contender, poolSize } from "../contender.js"

/**
 * The schema Emmett's objects live in (dropped and recreated by `setup`,
 * dropped by `teardown`). Not per process: Emmett checks for its functions
 * across all schemas, so a schema left over by an earlier run would stop it
 * creating them in a new one.
 */
const SCHEMA = "bench_emmett"
/** Connections in Emmett's pool (as the raw SQL and effect-chronicle contenders). */
const POOL_SIZE = poolSize

type Incremented = Event<"Incremented", { by: number }>
const incremented: Incremented = { type: "Incremented", data: { by: 1 } }

const evolve = (total: number, event: Incremented): number => total + event.data.by
const initialState = () => 0

const handle = CommandHandler<number, Incremented>({ evolve, initialState })

/**
 * `commandWithRetry`: retry on version conflicts until the command lands.
 * Emmett's own `onVersionConflict: true` is 3 retries backing off from 100 ms
 * (factor 1.5), which gives up on a hot stream. The other contenders retry
 * at once, forever; this is the same through Emmett's mechanism (async-retry),
 * whose shortest wait between attempts is 1 ms.
 */
const retryOnConflict: AsyncRetryOptions = {
  forever: true,
  retries: 1,
  factor: 1,
  minTimeout: 1,
  randomize: false,
  shouldRetryError: isExpectedVersionConflictError
}

/**
 * Emmett (through dumbo) installs process-wide pg type parsers: int8 as BigInt,
 * json/jsonb through its own serializer. Another contender in the same
 * process using `pg` (e.g. @effect/sql-pg) would then see BigInts. So we give
 * Emmett's parsers to Emmett's pool only, and put the global ones back.
 */
const EMMETT_OIDS = [20, 114, 3802] as const
let emmettTypes: pg.CustomTypesConfig | undefined
const emmettTypeParsers = (): pg.CustomTypesConfig => {
  if (emmettTypes !== undefined) return emmettTypes
  const saved = EMMETT_OIDS.map((oid) => [oid, pg.types.getTypeParser(oid)] as const)
  // Forcing it also marks dumbo's parsers as set, so Emmett will not set them again.
  setNodePostgresTypeParser({ force: true })
  const own = new Map<number, unknown>(EMMETT_OIDS.map((oid) => [oid, pg.types.getTypeParser(oid)]))
  for (const [oid, parser] of saved) pg.types.setTypeParser(oid, parser)
  const types: pg.CustomTypesConfig = {
    getTypeParser: ((oid: number, format?: "text" | "binary") =>
      (format ?? "text") === "text" && own.has(oid)
        ? own.get(oid)
        : pg.types.getTypeParser(oid, format as "text")) as pg.CustomTypesConfig["getTypeParser"]
  }
  emmettTypes = types
  return types
}

let url: string | undefined
let pool: pg.Pool | undefined
let store: PostgresEventStore | undefined

const getStore = (): PostgresEventStore => {
  if (store === undefined) throw new Error("emmett contender: setup() was not run")
  return store
}

const adminQuery = async (connectionString: string, sql: string) => {
  const client = new pg.Client({ connectionString })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

export const emmett: Contender & { readonly fetch: (streamId: string) => Promise<number> } = {
  name: "Emmett",

  /** Reads a stream's state (as the fetch of a command does): `aggregateStream`. */
  fetch: async (streamId) => {
    const { state } = await getStore().aggregateStream<number, Incremented>(streamId, { evolve, initialState })
    return state
  },

  setup: async (connectionString) => {
    url = connectionString
    await adminQuery(connectionString, `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA}`)
    // Emmett creates each of its functions only `IF NOT EXISTS (SELECT 1 FROM
    // pg_proc WHERE proname = ...)`, whatever the schema: another schema with
    // them would leave ours without.
    const others = await adminQuery(
      connectionString,
      `SELECT DISTINCT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE p.proname LIKE 'emt\\_%' AND n.nspname <> '${SCHEMA}'`
    )
    if (others.rows.length > 0) {
      const names = others.rows.map((row: { nspname: string }) => row.nspname).join(", ")
      throw new Error(
        `emmett contender: schema(s) ${names} of this database already hold Emmett's functions, ` +
          `so Emmett would not create them in "${SCHEMA}"; drop them or use another database`
      )
    }
    pool = new pg.Pool({
      connectionString,
      options: `-c search_path=${SCHEMA}`,
      max: POOL_SIZE, idleTimeoutMillis: 250,
      types: emmettTypeParsers()
    })
    store = getPostgreSQLEventStore(connectionString, {
      connectionOptions: { pool },
      schema: { autoMigration: "CreateOrUpdate" }
    })
    await store.schema.migrate()
    // Check ours got them.
    const found = await adminQuery(
      connectionString,
      `SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE p.proname = 'emt_append_to_stream' AND n.nspname = '${SCHEMA}'`
    )
    if (found.rowCount !== 1) {
      throw new Error(
        `emmett contender: emt_append_to_stream was not created in schema "${SCHEMA}" ` +
          `(Emmett skips it when another schema of the database already has one)`
      )
    }
    // Warm-up: pool connections, the append function, a command cycle.
    const warmUp = `warmup-${Date.now().toString(36)}`
    await store.appendToStream(warmUp, [incremented])
    await handle(store, warmUp, () => incremented, { retry: NoRetries })
  },

  teardown: async () => {
    const s = store
    const p = pool
    store = undefined
    pool = undefined
    if (s !== undefined) await s.close()
    if (p !== undefined) await p.end()
    if (url !== undefined) await adminQuery(url, `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`)
    url = undefined
  },

  seed: async (streamIds, events) => {
    const s = getStore()
    if (events <= 0) return
    const batch: Array<Incremented> = Array.from({ length: events }, () => incremented)
    const pending = [...streamIds]
    const worker = async () => {
      for (let id = pending.pop(); id !== undefined; id = pending.pop()) {
        await s.appendToStream(id, batch)
      }
    }
    await Promise.all(Array.from({ length: POOL_SIZE }, worker))
  },

  append: async (streamId) => {
    await getStore().appendToStream(streamId, [incremented])
  },

  command: async (streamId) => {
    await handle(getStore(), streamId, () => incremented, { retry: NoRetries })
  },

  commandWithRetry: async (streamId) => {
    await handle(getStore(), streamId, () => incremented, { retry: { onVersionConflict: retryOnConflict } })
  },

  commandExclusive: undefined,

  isConflict: (error) => isExpectedVersionConflictError(error)
}
