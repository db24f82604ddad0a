/**
 * The rows the PostgreSQL storage reads, and their decoding into the port's
 * values (and of the port's documents into statement parameters).
 *
 * @since 0.1.0
 */
import * as Storage from "../Storage.js"

/**
 * A row of one event, as the snapshot and log reads give it.
 *
 * @since 0.1.0
 */
export interface EventRow {
  readonly seq: string
  readonly version: string
  readonly type: string
  readonly data: unknown
  readonly metadata: Storage.StoredMetadata | null
  /** Epoch milliseconds. */
  readonly timestamp: number
  readonly tenant_id: string
}

/**
 * A row of the log, as a projection daemon reads it.
 *
 * @since 0.1.0
 */
export interface LoggedRow extends EventRow {
  readonly stream_id: string
  readonly stream_type: string
  readonly tx_id: string
}

/**
 * A row of a snapshot read: the snapshot (flagged), or one event of its tail.
 *
 * @since 0.1.0
 */
export interface SnapshotRow extends EventRow {
  /** Null on the row that says the stream is archived. */
  readonly snapshot: boolean | null
}

/**
 * A row of the documents table.
 *
 * @since 0.1.0
 */
export interface DocumentRow {
  readonly projection: string
  readonly projection_version: number
  readonly tenant_id: string
  readonly id: string
  readonly data: unknown
  readonly stream_version: string | null
}

/**
 * A row of a stream read: all its events as one JSON text.
 *
 * @since 0.1.0
 */
export interface EventsJsonRow {
  readonly events: string | null
  /** Whether the stream is archived. */
  readonly archived: boolean
}

type EventTuple = [seq: number, version: number, type: string, data: unknown, metadata: Storage.StoredMetadata | null, timestamp: number, tenant: string]

/**
 * The events of a stream read's JSON text.
 *
 * @since 0.1.0
 */
export const fromEventsJson = (streamId: string, json: string | null, archived = false): Storage.StreamEvents => {
  if (json === null) return archived ? Object.assign([], { archived }) : []
  const tuples = JSON.parse(json) as Array<EventTuple>
  const events: Array<Storage.StoredEvent> & { archived?: boolean } = new Array<Storage.StoredEvent>(tuples.length)
  if (archived) events.archived = true
  for (let i = 0; i < tuples.length; i++) {
    const t = tuples[i]
    events[i] = {
      streamId,
      version: t[1],
      sequence: t[0],
      type: t[2],
      data: t[3],
      metadata: t[4] ?? {},
      timestamp: new Date(t[5]),
      tenantId: t[6]
    }
  }
  return events
}

// What a read for a fold leaves out (see `Storage.ReadOptions.forFold`).
const notRead = { metadata: Object.freeze({}), timestamp: new Date(0) }

/**
 * The events of a stream read for a fold: `[version, type, data]` per event,
 * the rest placeholders (see `Storage.ReadOptions.forFold`).
 *
 * @since 0.2.0
 */
export const fromFoldJson = (streamId: string, tenantId: string, json: string | null, archived = false): Storage.StreamEvents => {
  if (json === null) return archived ? Object.assign([], { archived }) : []
  const tuples = JSON.parse(json) as Array<[number, string, unknown]>
  const events: Array<Storage.StoredEvent> & { archived?: boolean } = new Array<Storage.StoredEvent>(tuples.length)
  if (archived) events.archived = true
  for (let i = 0; i < tuples.length; i++) {
    const t = tuples[i]
    events[i] = { streamId, version: t[0], sequence: 0, type: t[1], data: t[2], metadata: notRead.metadata, timestamp: notRead.timestamp, tenantId }
  }
  return events
}

/**
 * An event of a row.
 *
 * @since 0.1.0
 */
export const toStored = (streamId: string, row: EventRow): Storage.StoredEvent => ({
  streamId,
  version: Number(row.version),
  sequence: Number(row.seq),
  type: row.type,
  data: row.data,
  metadata: row.metadata ?? {},
  timestamp: new Date(row.timestamp),
  tenantId: row.tenant_id
})

/**
 * A row of a commit statement (or of the look-up after its lost answer).
 *
 * @since 0.1.0
 */
export interface CommitRow {
  readonly stream_id: string
  readonly version: string | number
  readonly seq: string | number | null
  readonly timestamp: number | null
}

/**
 * Adds a commit row's event to its stream's appended events.
 *
 * @since 0.1.0
 */
export const appendedTo = (appended: Map<string, Array<Storage.AppendedEvent>>, row: CommitRow) => {
  let list = appended.get(row.stream_id)
  if (list === undefined) appended.set(row.stream_id, list = [])
  list.push({ version: Number(row.version), sequence: Number(row.seq), timestamp: new Date(row.timestamp!) })
}

/**
 * A document of a row.
 *
 * @since 0.1.0
 */
export const toDocument = (row: DocumentRow): Storage.StoredDocument => ({
  projection: row.projection,
  projectionVersion: Number(row.projection_version),
  tenantId: row.tenant_id,
  id: row.id,
  data: row.data,
  streamVersion: row.stream_version === null ? null : Number(row.stream_version)
})

/**
 * Document references as the four arrays the statements unnest.
 *
 * @since 0.1.0
 */
export const refArrays = (refs: ReadonlyArray<Storage.DocumentRef>) => [
  refs.map((r) => r.projection),
  refs.map((r) => r.projectionVersion),
  refs.map((r) => r.tenantId),
  refs.map((r) => r.id)
]

/**
 * Document writes as the six arrays the statements unnest.
 *
 * @since 0.1.0
 */
export const writeArrays = (writes: ReadonlyArray<Storage.DocumentWrite>) => [
  ...refArrays(writes),
  writes.map((w) => JSON.stringify(w.data)),
  writes.map((w) => w.streamVersion)
]

/**
 * A checkpoint of a row.
 *
 * @since 0.1.0
 */
export const checkpointOf = (row: { tx_id: string; seq: string }): Storage.Checkpoint => ({
  txId: BigInt(row.tx_id),
  sequence: Number(row.seq)
})
