/**
 * The reads of the PostgreSQL storage: streams (whole ones combined with
 * other sessions' under load), snapshots and documents.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Runtime from "effect/Runtime"
import { EventStoreError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import * as Combiner from "./combiner.js"
import * as Driver from "./driver.js"
import * as Spans from "./spans.js"
import { wrap } from "./failures.js"
import { type DocumentRow, type EventsJsonRow, fromEventsJson, fromFoldJson, refArrays, type SnapshotRow, toDocument, toStored } from "./rows.js"
import type { Store } from "./store.js"

/**
 * How many whole-stream reads of one store run as statements of their own at
 * once before further concurrent reads are combined into one statement.
 *
 * @since 0.1.0
 */
export const maxReadsInFlight = 8

/** The most streams one combined read asks for. */
const maxStreamsPerRead = 64

/**
 * Counts the statements that read several sessions' streams at once
 * (read-combining), tagged with the store's schema.
 *
 * @since 0.1.0
 */
export const combinedReadStatements = Metric.counter("effect_chronicle_combined_read_statements", {
  description: "Statements that read several concurrent fetches' streams at once"
})

const farFuture = new Date("9999-12-31T00:00:00Z")

type Events = Storage.StreamEvents

/**
 * A read waiting to be combined: a stream, whole or from a version on.
 *
 * @since 0.1.0
 */
export interface ReadWaiter extends Combiner.Waiter<Events, EventStoreError> {
  readonly tenantId: string
  readonly id: string
  readonly from: number
  /** A whole stream for a fold that builds no envelope: read lean, as alone (`readFold`). */
  readonly fold: boolean
}

// The waiters one statement serves: of the same kind as the first (lean or whole events), in the order they came.
const takeReads = (queue: Array<ReadWaiter>): Array<ReadWaiter> => {
  const fold = queue[0].fold
  const taken: Array<ReadWaiter> = []
  for (let i = 0; i < queue.length && taken.length < maxStreamsPerRead;) {
    if (queue[i].fold === fold) taken.push(queue.splice(i, 1)[0])
    else i++
  }
  return taken
}

/**
 * The reads of one store.
 *
 * @since 0.1.0
 */
export interface Reads {
  readonly store: Store
  /** Whether concurrent whole-stream reads may share one statement. */
  readonly combining: boolean
  readonly combiner: Combiner.Combiner<Events, EventStoreError, ReadWaiter>
}

/**
 * The reads of a store. Read-combining, as write-combining: while fewer than
 * `maxReadsInFlight` reads of this store are running, a read of a stream
 * (whole, or from a version on) goes alone, at once; reads beyond that wait
 * for the current turn of the event loop to end and then go together, one
 * statement for all (one round trip, one snapshot; each stream's events are
 * its own and complete as of that statement, which starts after every waiter
 * asked).
 *
 * @since 0.1.0
 */
export const make = (store: Store, combining: boolean): Reads => {
  const readStatements = Metric.tagged(combinedReadStatements, "schema", store.schema)
  const combiner = Combiner.make<Events, EventStoreError, ReadWaiter>({
    maxInFlight: maxReadsInFlight,
    maxQueuedInFlight: Combiner.maxQueuedInFlight,
    take: takeReads,
    send: (taken, landed) => {
      readStatements.unsafeUpdate(1, [])
      const fold = taken[0].fold
      const ids = taken.map((w) => w.id)
      const tenants = taken.map((w) => w.tenantId)
      const { names, q } = store
      // Runs in a fiber of its own: a waiter's interruption leaves the others' read alone.
      Runtime.runCallback(store.driver.runtime)(
        Combiner.traced(
          taken,
          fold
            ? Driver.prepared<EventsJsonRow & { readonly ord: string }>(store.driver, names.readManyFold, q.readManyFold, [ids, tenants])
            : Driver.prepared<EventsJsonRow & { readonly ord: string }>(store.driver, names.readMany, q.readMany, [
              ids,
              taken.map((w) => w.from),
              tenants
            ])
        ),
        {
          onExit: (exit) => {
            landed()
            const found = new Array<EventsJsonRow | null>(taken.length).fill(null)
            if (exit._tag === "Success") for (const row of exit.value) found[Number(row.ord) - 1] = row
            taken.forEach((waiter, i) => {
              if (waiter.gone) return
              // Each waiter parses its own copy (no two sessions share event objects); if
              // the shared statement failed, each reads alone, so that one bad read fails only itself.
              waiter.resume(
                exit._tag !== "Success"
                  ? readAlone(store, waiter.tenantId, waiter.id, waiter.from, fold)
                  : fold
                  ? parseFold(waiter.id, waiter.tenantId, found[i])
                  : parseEvents(waiter.id, found[i])
              )
            })
          }
        }
      )
    }
  })
  return { store, combining, combiner }
}

const parseEvents = (id: string, row: EventsJsonRow | null | undefined) =>
  Effect.try({
    try: () => row == null ? [] : fromEventsJson(id, row.events, row.archived),
    catch: (cause) => new EventStoreError({ message: `Reading stream "${id}" failed: its events did not parse`, cause })
  })
const parseFold = (id: string, tenantId: string, row: EventsJsonRow | null | undefined) =>
  Effect.try({
    try: () => row == null ? [] : fromFoldJson(id, tenantId, row.events, row.archived),
    catch: (cause) => new EventStoreError({ message: `Reading stream "${id}" failed: its events did not parse`, cause })
  })
const noEvents: Effect.Effect<Events> = Effect.succeed([])

/**
 * Reads a stream's events, within bounds.
 *
 * @since 0.1.0
 */
export const readStream = (reads: Reads, tenantId: string, id: string, options?: Storage.ReadOptions) => {
  // Bounds compare as numbers do, as in the in-memory store: versions are whole
  // (from 1.5 on is from 2 on), and a NaN bound or an invalid date matches nothing.
  const from = options?.fromVersion ?? 1
  const to = options?.toVersion ?? Number.POSITIVE_INFINITY
  const until = options?.toTimestamp
  if (Number.isNaN(from) || Number.isNaN(to) || (until !== undefined && Number.isNaN(until.getTime()))) return noEvents
  const start = Math.max(1, Math.ceil(from))
  const end = Math.min(Number.MAX_SAFE_INTEGER, Math.floor(to))
  if (start > end) return noEvents
  const { driver, names, q } = reads.store
  return end === Number.MAX_SAFE_INTEGER && until === undefined
    ? readFrom(reads, tenantId, id, start, options?.forFold === true)
    : parsed(id, Driver.prepared<EventsJsonRow>(driver, names.read, q.read, [id, start, end, until ?? farFuture, tenantId]), eventsOf)
}

// One step from a read's answer to its events: a failed read, or events that did not parse, fail naming the stream.
const parsed = (
  id: string,
  read: Effect.Effect<ReadonlyArray<EventsJsonRow>, SqlError>,
  parse: (id: string, row: EventsJsonRow) => Events
): Effect.Effect<Events, EventStoreError> =>
  Effect.matchEffect(read, {
    onFailure: (error) => Effect.fail(wrap(`Reading stream "${id}" failed`)(error)),
    onSuccess: (rows) => {
      try {
        return Effect.succeed(rows[0] == null ? [] : parse(id, rows[0]))
      } catch (cause) {
        return Effect.fail(new EventStoreError({ message: `Reading stream "${id}" failed: its events did not parse`, cause }))
      }
    }
  })
const eventsOf = (id: string, row: EventsJsonRow) => fromEventsJson(id, row.events, row.archived)

const readAlone = (store: Store, tenantId: string, id: string, from: number, forFold = false) =>
  forFold && from === 1
    ? readFold(store, tenantId, id)
    : parsed(
      id,
      from === 1
        ? Driver.prepared<EventsJsonRow>(store.driver, store.names.readAll, store.q.readAll, [id, tenantId])
        : Driver.prepared<EventsJsonRow>(store.driver, store.names.readFrom, store.q.readFrom, [id, from, tenantId]),
      eventsOf
    )

// A whole stream's versions, types and data only, for a fold that builds no envelope.
const readFold = (store: Store, tenantId: string, id: string) =>
  parsed(
    id,
    Driver.prepared<EventsJsonRow>(store.driver, store.names.readFold, store.q.readFold, [id, tenantId]),
    (id, row) => fromFoldJson(id, tenantId, row.events, row.archived)
  )

// Combined reads are lean for folds that build no envelope, as a read alone is.
const readFrom = (reads: Reads, tenantId: string, id: string, from: number, forFold: boolean): Effect.Effect<Events, EventStoreError> =>
  !reads.combining ? readAlone(reads.store, tenantId, id, from, forFold) : Effect.withFiberRuntime((fiber) => {
    // Inside a transaction the read must use its connection (and see its writes).
    if (Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some") {
      return readAlone(reads.store, tenantId, id, from, forFold)
    }
    if (Combiner.free(reads.combiner)) return Combiner.alone(reads.combiner, readAlone(reads.store, tenantId, id, from, forFold))
    return Combiner.enqueue(reads.combiner, {
      tenantId,
      id,
      from,
      fold: forFold && from === 1,
      resume: Combiner.unqueued,
      gone: false,
      cancel: undefined
    })
  })

/**
 * Reads a stream's latest snapshot among projection versions, and the events after it.
 *
 * @since 0.1.0
 */
export const loadSnapshot = (store: Store, tenantId: string, id: string, projection: string, projectionVersions: ReadonlyArray<number>) =>
  Driver.prepared<SnapshotRow>(store.driver, store.names.snapshot, store.q.snapshot, [id, projection, projectionVersions, tenantId]).pipe(
    Effect.map((rows): Storage.SnapshotLoad => {
      let snapshot: Storage.StoredDocument | undefined
      let archived = false
      const tail: Array<Storage.StoredEvent> = []
      for (const row of rows) {
        if (row.snapshot === null) {
          archived = true
        } else if (row.snapshot) {
          // The snapshot row carries its projection version in the seq column.
          snapshot = { projection, projectionVersion: Number(row.seq), tenantId, id, data: row.data, streamVersion: Number(row.version) }
        } else {
          tail.push(toStored(id, row))
        }
      }
      tail.sort((a, b) => a.version - b.version)
      return { snapshot, tail, archived }
    }),
    Effect.mapError(wrap(`Reading the snapshot of stream "${id}" failed`))
  )

/**
 * Reads documents by reference (those with data).
 *
 * @since 0.1.0
 */
export const readDocuments = (store: Store, refs: ReadonlyArray<Storage.DocumentRef>) =>
  refs.length === 0 ? Effect.succeed([]) : Spans.query<DocumentRow>(store, "documents", refArrays(refs)).pipe(
    Effect.map((rows) => rows.map(toDocument)),
    Effect.mapError(wrap("Reading documents failed"))
  )

interface StreamListRow {
  readonly id: string
  readonly type: string
  readonly version: string | number
  readonly seq: string | number
  readonly created: number
  readonly updated: number
  readonly archived: boolean
}

/**
 * Lists a tenant's streams, newest first (by their first event), paged.
 *
 * @since 0.2.0
 */
export const listStreams = (store: Store, tenantId: string, query: Storage.StreamQuery) =>
  Spans.query<StreamListRow>(store, "listStreams", [
    tenantId,
    query.streamType ?? null,
    query.after ?? null,
    Math.max(0, query.offset),
    Math.max(0, query.limit)
  ]).pipe(
    Effect.map((rows) =>
      rows.map((row): Storage.StreamInfo => ({
        streamId: row.id,
        streamType: row.type,
        version: Number(row.version),
        tenantId,
        sequence: Number(row.seq),
        createdAt: new Date(row.created),
        updatedAt: new Date(row.updated),
        archived: row.archived
      }))
    ),
    Effect.mapError(wrap("Listing streams failed"))
  )
