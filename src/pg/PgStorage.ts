/**
 * The PostgreSQL storage, over `@effect/sql`.
 *
 * A save of one stream is one statement and one round trip: a CTE bumps the
 * stream row only if its version matches, and inserts the events only if every
 * stream in the batch passed, so a losing writer never draws a sequence number.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Cause from "effect/Cause"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventStoreError } from "../Errors.js"
import * as Storage from "../Storage.js"
import * as Driver from "./driver.js"
import { connectionLost, outcomeUnknown, retryable, sqlState, toStoreError, wrap } from "./failures.js"
import {
  appendedTo,
  checkpointOf,
  type CommitRow,
  type DocumentRow,
  type EventsJsonRow,
  fromEventsJson,
  type LoggedRow,
  refArrays,
  type SnapshotRow,
  toDocument,
  toStored,
  writeArrays
} from "./rows.js"
import { notifyChannel, preparedNames, quoteSchema, singleStreamStatement, statementName, statements } from "./statements.js"

export { sqlState } from "./failures.js"
export { migrate } from "./migrations.js"
export { notifyChannel, quoteSchema, singleStreamStatement, statementName, statements } from "./statements.js"

/**
 * Options of the PostgreSQL storage.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The PostgreSQL schema the tables live in (default `chronicle`). */
  readonly schema?: string | undefined
  /** How often a projection daemon that does not lead a projection tries to take it over (default 500 ms). */
  readonly claimInterval?: Duration.DurationInput | undefined
  /** Whether concurrent single-stream saves may share one statement (default true). */
  readonly writeCombining?: boolean | undefined
  /** Whether concurrent whole-stream reads outside a transaction may share one statement (default true). */
  readonly readCombining?: boolean | undefined
}

const farFuture = new Date("9999-12-31T00:00:00Z")

/**
 * How many saves of one store run as statements of their own at once before
 * further concurrent saves are combined: up to here separate statements are
 * as cheap; beyond, sharing one saves round trips and commits.
 *
 * @since 0.1.0
 */
export const maxSavesInFlight = 8

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

/**
 * @internal the statements of a store now running alone or combined, and the
 * reads and saves waiting to be combined: all zero once the store is idle.
 */
export const inFlightOf = new WeakMap<Storage.Storage, () => { readonly reads: number; readonly saves: number; readonly queued: number }>()

/** What a commit statement (or the look-up after its lost answer) tells. */
interface Sent {
  /** The streams that passed, at their new version. */
  readonly passed: Map<string, number>
  readonly appended: Map<string, Array<Storage.AppendedEvent>>
}

// Schedules `flush` once, after the current turn of the event loop, while `waiting()`:
// every request that arrives in that turn joins the same flush.
const afterThisTurn = (waiting: () => boolean, flush: () => void) => {
  let scheduled = false
  return () => {
    if (scheduled || !waiting()) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      flush()
    })
  }
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
    const schema = options?.schema ?? "chronicle"
    const quoted = quoteSchema(schema)
    const q = statements(quoted)
    const names = preparedNames(schema)
    const driver = yield* Driver.make(sql, [names.read, names.readAll, names.readFrom, names.readMany, names.snapshot])
    const runtime = driver.runtime
    const reserve = driver.reserve
    const channel = notifyChannel(schema)


    // pg_notify makes commits queue on a cluster-wide lock, so appends notify
    // only while some daemon listens (it registers in the listeners table);
    // daemons poll as well, which covers the second it takes to notice.
    let listening = false
    const refreshListening = sql.unsafe<{ listening: boolean }>(q.listening).pipe(
      Effect.map((rows) => {
        listening = rows[0]?.listening === true
      }),
      Effect.ignore
    )
    yield* refreshListening
    yield* Effect.forkScoped(Effect.repeat(refreshListening, Schedule.spaced("1 second")))
    const notifyTo = () => listening ? channel : null

    const loadSnapshot = (tenantId: string, id: string, projection: string, projectionVersions: ReadonlyArray<number>) =>
      Driver.prepared<SnapshotRow>(driver, names.snapshot, q.snapshot, [id, projection, projectionVersions, tenantId]).pipe(
        Effect.map((rows): Storage.SnapshotLoad => {
          let snapshot: Storage.StoredDocument | undefined
          const tail: Array<Storage.StoredEvent> = []
          for (const row of rows) {
            if (row.snapshot) {
              // The snapshot row carries its projection version in the seq column.
              snapshot = { projection, projectionVersion: Number(row.seq), tenantId, id, data: row.data, streamVersion: Number(row.version) }
            } else {
              tail.push(toStored(id, row))
            }
          }
          tail.sort((a, b) => a.version - b.version)
          return { snapshot, tail }
        }),
        Effect.mapError(wrap(`Reading the snapshot of stream "${id}" failed`))
      )

    // A transaction of our own on a connection reserved for it (interruptible
    // while it waits for one), or a savepoint in a caller's: COMMIT, ROLLBACK
    // and their failures are errors, never defects. A failed COMMIT whose
    // answer never came leaves the outcome unknown, and says so.
    class Rollback {
      constructor(readonly result: Storage.CommitResult) {}
    }
    const transactional = <A>(
      body: Effect.Effect<A, SqlError | EventStoreError | Rollback>
    ): Effect.Effect<A, SqlError | EventStoreError | Rollback> =>
      Effect.withFiberRuntime((fiber) => {
        const outer = Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)
        const run = (conn: SqlConnection.Connection, depth: number, own: boolean) => {
          const [begin, commit, rollback] = own
            ? ["BEGIN", "COMMIT", "ROLLBACK"]
            : ["SAVEPOINT chronicle_save", "RELEASE SAVEPOINT chronicle_save", "ROLLBACK TO SAVEPOINT chronicle_save"]
          return Effect.uninterruptibleMask((restore) =>
            Effect.zipRight(
              restore(conn.executeUnprepared(begin, [], undefined)),
              Effect.exit(restore(Effect.provideService(body, SqlClient.TransactionConnection, [conn, depth] as const)))
            ).pipe(Effect.flatMap((exit) =>
              exit._tag === "Success"
                ? Effect.as(
                  conn.executeUnprepared(commit, [], undefined).pipe(Effect.mapError((e) =>
                    connectionLost(e)
                      ? new EventStoreError({ message: "The connection was lost while committing: the outcome of this save is unknown", cause: e })
                      : e
                  )),
                  exit.value
                )
                : Effect.zipRight(Effect.ignore(conn.executeUnprepared(rollback, [], undefined)), exit)
            ))
          )
        }
        return Option.isSome(outer)
          ? run(outer.value[0], outer.value[1] + 1, false)
          : Effect.scoped(Effect.flatMap(reserve, (conn) => run(conn, 0, true)))
      })
    const readStatements = Metric.tagged(combinedReadStatements, "schema", schema)

    const readDocuments = (refs: ReadonlyArray<Storage.DocumentRef>) =>
      refs.length === 0 ? Effect.succeed([]) : sql.unsafe<DocumentRow>(q.documents, refArrays(refs)).pipe(
        Effect.map((rows) => rows.map(toDocument)),
        Effect.mapError(wrap("Reading documents failed"))
      )

    const parseEvents = (id: string, json: string | null) =>
      Effect.try({
        try: () => fromEventsJson(id, json),
        catch: (cause) => new EventStoreError({ message: `Reading stream "${id}" failed: its events did not parse`, cause })
      })
    const noEvents: Effect.Effect<ReadonlyArray<Storage.StoredEvent>> = Effect.succeed([])
    const readStream = (tenantId: string, id: string, options?: Storage.ReadOptions) => {
      // Bounds compare as numbers do, as in the in-memory store: versions are whole
      // (from 1.5 on is from 2 on), and a NaN bound or an invalid date matches nothing.
      const from = options?.fromVersion ?? 1
      const to = options?.toVersion ?? Number.POSITIVE_INFINITY
      const until = options?.toTimestamp
      if (Number.isNaN(from) || Number.isNaN(to) || (until !== undefined && Number.isNaN(until.getTime()))) return noEvents
      const start = Math.max(1, Math.ceil(from))
      const end = Math.min(Number.MAX_SAFE_INTEGER, Math.floor(to))
      if (start > end) return noEvents
      return end === Number.MAX_SAFE_INTEGER && until === undefined
        ? readFrom(tenantId, id, start)
        : Driver.prepared<EventsJsonRow>(driver, names.read, q.read, [id, start, end, until ?? farFuture, tenantId]).pipe(
          Effect.mapError(wrap(`Reading stream "${id}" failed`)),
          Effect.flatMap((rows) => parseEvents(id, rows[0]?.events ?? null))
        )
    }
    const readAlone = (tenantId: string, id: string, from: number) =>
      (from === 1
        ? Driver.prepared<EventsJsonRow>(driver, names.readAll, q.readAll, [id, tenantId])
        : Driver.prepared<EventsJsonRow>(driver, names.readFrom, q.readFrom, [id, from, tenantId])).pipe(
        Effect.mapError(wrap(`Reading stream "${id}" failed`)),
        Effect.flatMap((rows) => parseEvents(id, rows[0]?.events ?? null))
      )

    // Read-combining, as write-combining below: while fewer than
    // `maxReadsInFlight` reads of this store are running, a read of a stream
    // (whole, or from a version on) goes alone, at once; reads beyond that
    // wait for the current turn of the event loop to end and then go together,
    // one statement for all (one round trip, one snapshot; each stream's events
    // are its own and complete as of that statement, which starts after every
    // waiter asked).
    interface ReadWaiter {
      readonly tenantId: string
      readonly id: string
      readonly from: number
      readonly resume: (effect: Effect.Effect<ReadonlyArray<Storage.StoredEvent>, EventStoreError>) => void
      gone: boolean
    }
    const readQueue: Array<ReadWaiter> = []
    let readsInFlight = 0
    const readCombining = options?.readCombining !== false
    const releaseRead = Effect.sync(() => {
      readsInFlight--
      scheduleReadFlush()
    })
    const scheduleReadFlush = afterThisTurn(() => readQueue.length > 0, () => flushReads())
    const flushReads = () => {
      while (readsInFlight < maxReadsInFlight && readQueue.length > 0) {
        const taken = readQueue.splice(0, maxStreamsPerRead)
        readsInFlight++
        readStatements.unsafeUpdate(1, [])
        const ids = taken.map((w) => w.id)
        const froms = taken.map((w) => w.from)
        const tenants = taken.map((w) => w.tenantId)
        // Runs in a fiber of its own: a waiter's interruption leaves the others' read alone.
        Runtime.runCallback(runtime)(Driver.prepared<EventsJsonRow & { readonly ord: string }>(driver, names.readMany, q.readMany, [ids, froms, tenants]), {
          onExit: (exit) => {
            readsInFlight--
            const found = new Array<string | null>(taken.length).fill(null)
            if (exit._tag === "Success") for (const row of exit.value) found[Number(row.ord) - 1] = row.events
            taken.forEach((waiter, i) => {
              if (waiter.gone) return
              // Each waiter parses its own copy (no two sessions share event objects); if
              // the shared statement failed, each reads alone, so that one bad read fails only itself.
              waiter.resume(exit._tag === "Success" ? parseEvents(waiter.id, found[i]) : readAlone(waiter.tenantId, waiter.id, waiter.from))
            })
            scheduleReadFlush()
          }
        })
      }
    }
    const readQueued = (tenantId: string, id: string, from: number) =>
      Effect.async<ReadonlyArray<Storage.StoredEvent>, EventStoreError>((resume) => {
        const waiter: ReadWaiter = { tenantId, id, from, resume, gone: false }
        readQueue.push(waiter)
        scheduleReadFlush()
        return Effect.sync(() => {
          waiter.gone = true
          const i = readQueue.indexOf(waiter)
          if (i >= 0) readQueue.splice(i, 1)
        })
      })
    const readFrom = (tenantId: string, id: string, from: number): Effect.Effect<ReadonlyArray<Storage.StoredEvent>, EventStoreError> =>
      !readCombining ? readAlone(tenantId, id, from) : Effect.withFiberRuntime((fiber) => {
        // Inside a transaction the read must use its connection (and see its writes).
        if (Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some") return readAlone(tenantId, id, from)
        if (readsInFlight < maxReadsInFlight && readQueue.length === 0) {
          return Effect.uninterruptibleMask((restore) => {
            readsInFlight++
            return Effect.ensuring(restore(readAlone(tenantId, id, from)), releaseRead)
          })
        }
        return readQueued(tenantId, id, from)
      })

    // One stream whose documents (if any) are its own Inline snapshot at the new version.
    const singleStream = (batch: Storage.CommitBatch) => {
      if (batch.streams.length !== 1 || batch.inline !== undefined) return undefined
      const write = batch.streams[0]
      const docs = batch.documents ?? []
      const expectedVersion = write.expected === "any" ? -1 : write.expected
      const newVersion = write.expected === "any" ? undefined : write.expected + write.events.length
      if (docs.length > 0 && (newVersion === undefined || docs.some((d) => d.id !== write.streamId || d.streamVersion !== newVersion || d.data !== docs[0].data))) {
        return undefined
      }
      return { write, docs, expectedVersion }
    }
    const singleStatements = new Map<string, { name: string; text: string }>()
    const singleStatement = (expected: "exact" | "new" | "any", snapshot: boolean, notify: boolean, oneEvent: boolean) => {
      const key = `${expected}_${snapshot ? "snap" : "plain"}${oneEvent ? "_one" : ""}${notify ? "_notify" : ""}`
      let statement = singleStatements.get(key)
      if (statement === undefined) {
        statement = { name: statementName(schema, `save_${key}`), text: singleStreamStatement(quoted, expected, snapshot, notify, oneEvent) }
        singleStatements.set(key, statement)
      }
      return statement
    }
    const runSingle = (plan: NonNullable<ReturnType<typeof singleStream>>, batch: Storage.CommitBatch) => {
      const { docs, expectedVersion, write } = plan
      const kind = expectedVersion < 0 ? "any" : expectedVersion === 0 ? "new" : "exact"
      const notify = notifyTo()
      const events = write.events
      // With no event (a version assertion) the stream row tells the outcome; otherwise the events do.
      const oneEvent = events.length === 1
      const statement = singleStatement(kind, docs.length > 0, notify !== null, oneEvent)
      const values: Array<unknown> = [
        write.streamId,
        events.length,
        Math.max(0, expectedVersion),
        write.aggregateType,
        batch.tenantId
      ]
      if (oneEvent) {
        values.push(events[0].type, JSON.stringify(events[0].data), JSON.stringify(events[0].metadata))
      } else {
        const types = new Array<string>(events.length)
        const data = new Array<string>(events.length)
        const metadata = new Array<string>(events.length)
        for (let i = 0; i < events.length; i++) {
          types[i] = events[i].type
          data[i] = JSON.stringify(events[i].data)
          metadata[i] = JSON.stringify(events[i].metadata)
        }
        values.push(types, data, metadata)
      }
      if (docs.length > 0) values.push(docs.map((d) => d.projection), docs.map((d) => d.projectionVersion), JSON.stringify(docs[0].data))
      if (notify !== null) values.push(notify)
      return Effect.flatMap(
        Driver.prepared<{ seq: string | null; version: string | null; timestamp: number | null }>(driver, statement.name, statement.text, values),
        (rows): Effect.Effect<Storage.CommitResult, SqlError> => {
          let version: number | undefined
          const appended: Array<Storage.AppendedEvent> = []
          for (const row of rows) {
            if (row.version === null) continue // the notification's row
            if (row.seq === null) version = Number(row.version)
            else appended.push({ version: Number(row.version), sequence: Number(row.seq), timestamp: new Date(row.timestamp!) })
          }
          if (oneEvent && appended.length === 1) version = appended[0].version
          if (version === undefined) {
            return Effect.map(sql.unsafe<{ id: string; version: string }>(q.versions, [[write.streamId], batch.tenantId]), (actual) => ({
              _tag: "Conflicted",
              conflicts: [{ streamId: write.streamId, expected: expectedVersion, actual: actual.length === 0 ? 0 : Number(actual[0].version) }]
            }))
          }
          if (appended.length > 1) appended.sort((a, b) => a.version - b.version)
          return Effect.succeed({
            _tag: "Committed",
            streams: [{ streamId: write.streamId, previousVersion: version - events.length, version, events: appended }]
          })
        }
      )
    }

    const run = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> =>
      Effect.suspend(() => {
        const single = singleStream(batch)
        return single === undefined ? runBatch(batch) : runSingle(single, batch)
      })

    const runBatch = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> =>
      Effect.gen(function*() {
        const sent = yield* execute(batch, undefined)
        const { committed, conflicts } = yield* settle(batch, sent)
        if (conflicts.length > 0) return { _tag: "Conflicted", conflicts } as Storage.CommitResult
        const outcome = batch.inline === undefined ? undefined : yield* runInline(batch.inline, committed)
        return { _tag: "Committed", streams: committed, states: outcome?.states } as Storage.CommitResult
      })

    // Sends the batch statement: all streams or none, or with a commit token
    // (write-combining) each stream on its own. Tells which streams passed, at
    // which version, and the events appended.
    const execute = (batch: Storage.CommitBatch, token: string | undefined) =>
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
        // Rows are locked in id order, so two saves of the same streams cannot
        // deadlock (a combined statement runs in no transaction: no lock to take first).
        const writes = batch.streams.length > 1
          ? [...batch.streams].sort((a, b) => a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : 0)
          : batch.streams
        if (writes.length > 1 && token === undefined) {
          yield* sql.unsafe(q.lockRows, [writes.map((w) => w.streamId), batch.tenantId])
        }
        for (const write of writes) {
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
        const values = [
          ids, types, expected, counts, batch.tenantId, evStream, evOrd, evType, evData, evMeta, ids.length,
          ...writeArrays(batch.documents ?? []),
          notifyTo()
        ]
        const rows = token === undefined
          ? yield* Driver.prepared<CommitRow>(driver, names.commit, q.commit, values)
          : yield* Driver.prepared<CommitRow>(driver, names.commitEach, q.commitEach, [...values, token])
        const passed = new Map<string, number>()
        const appended = new Map<string, Array<Storage.AppendedEvent>>()
        for (const row of rows) {
          if (row.stream_id === null) continue // the notification's row
          if (row.seq === null) passed.set(row.stream_id, Number(row.version))
          else appendedTo(appended, row)
        }
        return { passed, appended } satisfies Sent
      })

    // The outcome of a batch whose passing streams are known: the others
    // conflicted. Only the losing path pays for a second round trip, to report
    // the real version.
    const settle = (batch: Storage.CommitBatch, sent: Sent) =>
      Effect.gen(function*() {
        const failed = batch.streams.filter((w) => !sent.passed.has(w.streamId))
        const conflicts: Array<Storage.Conflict> = []
        if (failed.length > 0) {
          const actual = yield* sql.unsafe<{ id: string; version: string }>(q.versions, [failed.map((w) => w.streamId), batch.tenantId])
          const found = new Map(actual.map((r) => [r.id, Number(r.version)]))
          for (const w of failed) {
            conflicts.push({ streamId: w.streamId, expected: w.expected === "any" ? -1 : w.expected, actual: found.get(w.streamId) ?? 0 })
          }
        }
        const committed = batch.streams.filter((w) => sent.passed.has(w.streamId)).map((w): Storage.CommittedStream => {
          const version = sent.passed.get(w.streamId)!
          const events = (sent.appended.get(w.streamId) ?? []).sort((a, b) => a.version - b.version)
          return { streamId: w.streamId, previousVersion: version - w.events.length, version, events }
        })
        return { committed, conflicts }
      })

    // Runs inside the commit's transaction, after the events are in.
    const runInline = (work: Storage.InlineWork, committed: ReadonlyArray<Storage.CommittedStream>) =>
      Effect.gen(function*() {
        const step = yield* work.prepare(committed)
        let existing: ReadonlyArray<Storage.StoredDocument> = []
        if (step.documents.length > 0) {
          yield* sql.unsafe(q.placeholders, refArrays(step.documents))
          existing = (yield* sql.unsafe<DocumentRow>(q.lockDocuments, refArrays(step.documents)))
            .filter((row) => row.data !== null)
            .map(toDocument)
        }
        const outcome = yield* step.compute(existing)
        if (outcome.writes.length > 0) yield* sql.unsafe(q.upsertDocuments, writeArrays(outcome.writes))
        return outcome
      })

    const conflictsAfter = (batch: Storage.CommitBatch, error: SqlError): Effect.Effect<Storage.CommitResult, EventStoreError> =>
      Effect.flatMap(
        sql.unsafe<{ id: string; version: string }>(q.versions, [batch.streams.map((w) => w.streamId), batch.tenantId]),
        (rows) => {
          const found = new Map(rows.map((r) => [r.id, Number(r.version)]))
          const conflicts = batch.streams.flatMap((w) => {
            const actual = found.get(w.streamId) ?? 0
            return w.expected !== "any" && w.expected !== actual ? [{ streamId: w.streamId, expected: w.expected, actual }] : []
          })
          if (conflicts.length > 0) return Effect.succeed<Storage.CommitResult>({ _tag: "Conflicted", conflicts })
          return sqlState(error) === "40P01"
            ? Effect.succeed<Storage.CommitResult>({ _tag: "Deadlocked", streamIds: batch.streams.map((w) => w.streamId) })
            : Effect.fail(error)
        }
      ).pipe(Effect.mapError(toStoreError))
    const recover = (batch: Storage.CommitBatch) => (e: SqlError | EventStoreError) =>
      retryable(e) ? conflictsAfter(batch, e) : Effect.fail(toStoreError(e))

    // Several streams: the statement's partial updates must roll back with a
    // conflict; inline work takes statements of its own. Both run in a
    // transaction (a savepoint inside a caller's).
    const commitDirect = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> =>
      Effect.catchAll(
        batch.streams.length === 1 && batch.inline === undefined
          ? Effect.mapError(run(batch), (e) =>
            // One statement, committed by the server on its own: with its answer lost, it may have.
            connectionLost(e)
              ? new EventStoreError({ message: "The connection was lost during the save: the outcome of this save is unknown", cause: e })
              : e)
          : transactional(
            Effect.flatMap(run(batch), (result) =>
              result._tag === "Conflicted" ? Effect.fail(new Rollback(result)) : Effect.succeed(result))
          ).pipe(Effect.catchIf((e): e is Rollback => e instanceof Rollback, (e) => Effect.succeed(e.result))),
        recover(batch)
      )

    // Write-combining. While fewer than `maxInFlight` statements of this store
    // are running, a save goes alone, at once; saves that arrive beyond that
    // wait and then go together in one statement (one round trip, one commit),
    // each stream checked on its own so that a conflict in one never fails
    // another. A save is never written twice: the saves of a failed shared
    // statement go again alone only when it is known not to have committed
    // (the server refused it, or its token shows it never will); with its
    // answer lost, its token tells what it wrote.
    interface Waiter {
      readonly batch: Storage.CommitBatch
      readonly resume: (effect: Effect.Effect<Storage.CommitResult, EventStoreError>) => void
      cancel?: (() => void) | undefined
    }
    const queue: Array<Waiter> = []
    let inFlight = 0
    const maxInFlight = maxSavesInFlight
    // Queued saves go out once the current turn of the event loop is over, so
    // that every save that arrived in it joins the same statement.
    const scheduleFlush = afterThisTurn(() => queue.length > 0, () => flush())
    const combineLimit = options?.writeCombining === false ? 1 : 128
    const release = Effect.sync(() => {
      inFlight--
      scheduleFlush()
    })
    // Runs a save alone in the caller's fiber, so that interrupting it cancels it.
    const alone = (batch: Storage.CommitBatch) =>
      Effect.uninterruptibleMask((restore) => {
        inFlight++
        return Effect.ensuring(restore(commitDirect(batch)), release)
      })

    // What each save of a combined statement resumes with: its result, or
    // (undefined) going again alone, known not to be written.
    type Verdicts = (streamId: string) => Effect.Effect<Storage.CommitResult, EventStoreError> | undefined
    const again: Verdicts = () => undefined
    const verdictsOf = (batch: Storage.CommitBatch, sent: Sent): Effect.Effect<Verdicts> =>
      settle(batch, sent).pipe(
        Effect.map(({ committed, conflicts }): Verdicts => {
          const byId = new Map<string, Storage.CommitResult>()
          for (const c of committed) byId.set(c.streamId, { _tag: "Committed", streams: [c] })
          for (const c of conflicts) byId.set(c.streamId, { _tag: "Conflicted", conflicts: [c] })
          return (id) => Effect.succeed(byId.get(id)!)
        }),
        // Reading the versions of the losers failed: they wrote nothing, so they go again.
        Effect.orElseSucceed((): Verdicts => (id) => sent.passed.has(id) ? verdictsFor(batch, sent, id) : undefined)
      )
    const verdictsFor = (batch: Storage.CommitBatch, sent: Sent, id: string) => {
      const write = batch.streams.find((w) => w.streamId === id)!
      const version = sent.passed.get(id)!
      const events = (sent.appended.get(id) ?? []).sort((a, b) => a.version - b.version)
      return Effect.succeed<Storage.CommitResult>({
        _tag: "Committed",
        streams: [{ streamId: id, previousVersion: version - write.events.length, version, events }]
      })
    }
    // After a lost answer: claim the token, or find the transaction that wrote
    // it and the events it appended. Retried briefly (the server may be
    // restarting); the tokens are kept long enough for that.
    const lookUp = (batch: Storage.CommitBatch, token: string): Effect.Effect<Sent | undefined, EventStoreError> =>
      Effect.gen(function*() {
        const claimed = yield* sql.unsafe(q.claimToken, [token])
        if (claimed.length > 0) return undefined
        const tx = yield* sql.unsafe<{ tx_id: string | null }>(q.tokenTx, [token])
        if (tx.length === 0) return yield* Effect.fail(new EventStoreError({ message: "The commit token is gone" }))
        // Our own claim, whose answer was lost before this try.
        if (tx[0].tx_id === null) return undefined
        const rows = yield* sql.unsafe<CommitRow>(q.committedBy, [tx[0].tx_id, batch.tenantId])
        const passed = new Map<string, number>()
        const appended = new Map<string, Array<Storage.AppendedEvent>>()
        for (const row of rows) {
          appendedTo(appended, row)
          passed.set(row.stream_id, Math.max(passed.get(row.stream_id) ?? 0, Number(row.version)))
        }
        return { passed, appended }
      }).pipe(
        Effect.retry({ schedule: Schedule.exponential("100 millis"), times: 5 }),
        Effect.mapError((cause) =>
          new EventStoreError({
            message: "The connection was lost during a combined save and its commit could not be looked up: the outcome of this save is unknown",
            cause
          })
        )
      )
    const runCombined = (batch: Storage.CommitBatch, token: string): Effect.Effect<Verdicts> =>
      Effect.exit(execute(batch, token)).pipe(
        Effect.flatMap((exit): Effect.Effect<Verdicts> => {
          if (exit._tag === "Success") return verdictsOf(batch, exit.value)
          const error = Cause.failureOption(exit.cause)
          // The server refused the statement: it rolled back whole.
          if (Option.isSome(error) && !connectionLost(error.value)) return Effect.succeed(again)
          return lookUp(batch, token).pipe(
            Effect.flatMap((sent) => sent === undefined ? Effect.succeed(again) : verdictsOf(batch, sent)),
            Effect.catchAll((e) => Effect.succeed<Verdicts>(() => Effect.fail(e)))
          )
        })
      )
    // Tokens are needed only for the minutes a look-up may take; pruned at most once a minute.
    let prunedAt = 0
    const prune = () => {
      if (Date.now() - prunedAt < 60_000) return
      prunedAt = Date.now()
      Runtime.runCallback(runtime)(Effect.ignore(sql.unsafe(q.pruneTokens)))
    }

    const flush = () => {
      while (inFlight < maxInFlight && queue.length > 0) {
        const tenant = queue[0].batch.tenantId
        const ids = new Set<string>()
        const taken: Array<Waiter> = []
        for (let i = 0; i < queue.length && taken.length < combineLimit;) {
          const waiter = queue[i]
          const id = waiter.batch.streams[0].streamId
          if (!ids.has(id) && waiter.batch.tenantId === tenant) {
            ids.add(id)
            taken.push(waiter)
            queue.splice(i, 1)
          } else i++
        }
        inFlight++
        // Queued saves run in fibers of their own, whose end (even by the
        // waiter's interruption) gives the slot back.
        if (taken.length === 1) {
          const waiter = taken[0]
          waiter.cancel = Runtime.runCallback(runtime)(commitDirect(waiter.batch), {
            onExit: (exit) => {
              inFlight--
              waiter.resume(exit)
              scheduleFlush()
            }
          })
          continue
        }
        // A shared statement is not cancelled when one of its saves is
        // interrupted: the others' outcome must stay known.
        prune()
        const combined: Storage.CommitBatch = { tenantId: tenant, streams: taken.map((w) => w.batch.streams[0]) }
        Runtime.runCallback(runtime)(runCombined(combined, crypto.randomUUID()), {
          onExit: (exit) => {
            inFlight--
            for (const waiter of taken) {
              const verdict = exit._tag === "Success" ? exit.value(waiter.batch.streams[0].streamId) : undefined
              waiter.resume(verdict ?? commitDirect(waiter.batch))
            }
            scheduleFlush()
          }
        })
      }
    }
    const combine = (batch: Storage.CommitBatch) =>
      Effect.async<Storage.CommitResult, EventStoreError>((resume) => {
        const waiter: Waiter = { batch, resume }
        queue.push(waiter)
        scheduleFlush()
        return Effect.sync(() => {
          const i = queue.indexOf(waiter)
          if (i >= 0) queue.splice(i, 1)
          else waiter.cancel?.()
        })
      })
    const combinable = (batch: Storage.CommitBatch) =>
      batch.streams.length === 1 && batch.inline === undefined && (batch.documents?.length ?? 0) === 0

    const commit = (batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> =>
      !combinable(batch) ? commitDirect(batch) : Effect.withFiberRuntime((fiber) =>
        // Inside a transaction the save must use its connection: it cannot be combined.
        Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some"
          ? commitDirect(batch)
          : inFlight < maxInFlight && queue.length === 0
          ? alone(batch)
          : combine(batch)
      )

    const begin: Effect.Effect<Storage.Transaction, EventStoreError, Scope.Scope> = Effect.gen(function*() {
      // Inside a caller's transaction the session's transaction is a savepoint
      // of it, so the caller's commit or rollback decides for both.
      const outer = yield* Effect.serviceOption(SqlClient.TransactionConnection)
      const conn: SqlConnection.Connection = Option.isSome(outer) ? outer.value[0] : yield* reserve
      const statements = Option.isSome(outer)
        ? { begin: "SAVEPOINT chronicle_session", commit: "RELEASE SAVEPOINT chronicle_session", rollback: "ROLLBACK TO SAVEPOINT chronicle_session" }
        : { begin: "BEGIN", commit: "COMMIT", rollback: "ROLLBACK" }
      // A transaction of our own begins with its first lock, in the same round
      // trip as setting the lock time-out; a savepoint in a caller's begins now.
      let open = false
      if (Option.isSome(outer)) {
        open = true
        yield* conn.executeUnprepared(statements.begin, [], undefined)
      }
      yield* Effect.addFinalizer(() =>
        open ? Effect.ignore(conn.executeUnprepared(statements.rollback, [], undefined)) : Effect.void
      )
      const ensureOpen = Effect.suspend(() => {
        if (open) return Effect.void
        open = true
        return conn.executeUnprepared(statements.begin, [], undefined)
      }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Opening a transaction failed")(e)))
      // Every statement of the transaction runs on its connection.
      const inTx = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.provideService(
          Effect.zipRight(ensureOpen, effect),
          SqlClient.TransactionConnection,
          [conn, Option.isSome(outer) ? outer.value[1] + 1 : 0] as const
        )
      // A lock not had in time (55P03), or refused by the deadlock detector (40P01).
      const notHad = (e: SqlError | EventStoreError): Storage.LockOutcome | undefined =>
        e._tag !== "SqlError" ? undefined : sqlState(e) === "55P03" ? "TimedOut" : sqlState(e) === "40P01" ? "Deadlocked" : undefined
      const timeoutOf = (timeout: Duration.Duration) => `${Math.max(1, Math.round(Duration.toMillis(timeout)))}ms`
      const setTimeout = (timeout: Duration.Duration) =>
        `SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', '${timeoutOf(timeout)}', true)`
      const exec = (text: string) => Driver.unpreparedResults<{ previous: string }>(conn, text)
      // Locks, then undoes what a lock not had left (with `undo`), or fails.
      const tryLock = (
        id: string,
        type: string,
        tenant: string,
        previous: string,
        kept: Effect.Effect<unknown, SqlError>,
        undo: Effect.Effect<unknown, SqlError>
      ) =>
        Effect.flatMap(Effect.either(inTx(Driver.prepared(driver, names.lock, q.lock, [id, type, tenant, previous]))), (locked) => {
          if (Either.isRight(locked)) return Effect.as(kept, "Locked" as const)
          const outcome = notHad(locked.left)
          return outcome === undefined ? Effect.fail(locked.left) : Effect.as(undo, outcome)
        })

      // Under a lock time-out that ends with the lock: the save's own waits
      // stay unbounded, as PostgreSQL's default. The first lock of our own
      // transaction costs two round trips: BEGIN with the time-out, then the
      // lock, which restores the time-out once it has the row. Failing, it
      // leaves nothing to keep: the transaction rolls back and begins anew.
      const firstLock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.suspend(() => {
          open = true
          return Effect.flatMap(exec(`BEGIN; ${setTimeout(timeout)}`), (results) =>
            tryLock(id, type, tenant, results[1][0].previous, Effect.void, Effect.suspend(() => {
              open = false
              return exec(statements.rollback)
            })))
        })
      // Later locks (or any in a caller's transaction) keep what the
      // transaction holds: a lock not had rolls back to a savepoint.
      const laterLock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.zipRight(
          ensureOpen,
          Effect.flatMap(exec(`SAVEPOINT chronicle_lock; ${setTimeout(timeout)}`), (results) =>
            tryLock(id, type, tenant, results[1][0].previous, exec("RELEASE SAVEPOINT chronicle_lock"), exec("ROLLBACK TO SAVEPOINT chronicle_lock")))
        )
      const lock = (id: string, type: string, tenant: string, timeout: Duration.Duration) =>
        Effect.suspend(() => open ? laterLock(id, type, tenant, timeout) : firstLock(id, type, tenant, timeout)).pipe(
          Effect.mapError((e) => e._tag === "SqlError" ? wrap(`Locking stream "${id}" failed`)(e) : e)
        )

      const commit = (batch: Storage.CommitBatch) =>
        Effect.gen(function*() {
          const result: Either.Either<Storage.CommitResult, SqlError | EventStoreError> = batch.streams.length === 0
            ? Either.right({ _tag: "Committed", streams: [] })
            : yield* Effect.either(inTx(run(batch)))
          const wasOpen = open
          open = false
          const ok = Either.isRight(result) ? result.right._tag === "Committed" : false
          if (wasOpen) {
            yield* conn.executeUnprepared(ok ? statements.commit : statements.rollback, [], undefined).pipe(
              // A COMMIT of our own sent and never answered may have committed.
              Effect.tapError((e) =>
                Effect.sync(() => {
                  if (ok && Option.isNone(outer) && Driver.sentAndLost(e)) outcomeUnknown.add(e)
                })
              )
            )
          }
          if (Either.isLeft(result)) {
            const error = result.left
            return yield* retryable(error) ? conflictsAfter(batch, error) : Effect.fail(error)
          }
          return result.right
        }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Saving events failed")(e)))

      return {
        readStream: (tenantId, id, options) => inTx(readStream(tenantId, id, options)),
        loadSnapshot: (tenantId, id, projection, versions) => inTx(loadSnapshot(tenantId, id, projection, versions)),
        readDocuments: (refs) => inTx(readDocuments(refs)),
        lock,
        commit
      } satisfies Storage.Transaction
    }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap("Opening a transaction failed")(e)))

    const progressOf = (ref: Storage.ProjectionRef) =>
      sql.unsafe<{ tx_id: string; seq: string; processed: string }>(q.progress, [ref.name, ref.version]).pipe(
        Effect.map((rows): Storage.Progress =>
          rows.length === 0
            ? { checkpoint: Storage.origin, processed: 0 }
            : { checkpoint: checkpointOf(rows[0]), processed: Number(rows[0].processed) }
        ),
        Effect.mapError(wrap(`Reading the progress of projection ${ref.name} failed`))
      )

    // Leadership is a session advisory lock on a reserved connection, and every
    // statement of the leader runs on that connection: if it dies, so does the
    // lock, and the leader's next statement fails instead of writing as a zombie.
    const claim = (ref: Storage.ProjectionRef) =>
      Effect.gen(function*() {
        const conn: SqlConnection.Connection = yield* reserve
        const onConn = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0] as const)
        const key = [`effect-chronicle:${schema}`, `${ref.name}@${ref.version}`]
        const tryLock = onConn(sql.unsafe<{ ok: boolean }>(q.tryLock, key))
        yield* tryLock.pipe(
          Effect.repeat({ until: (rows) => rows[0].ok, schedule: Schedule.spaced(options?.claimInterval ?? "500 millis") })
        )
        yield* Effect.addFinalizer(() => Effect.ignore(onConn(sql.unsafe(q.unlock, key))))
        // On the leader's connection, so that a lost leadership fails the batch.
        const inTransaction = <A>(effect: Effect.Effect<A, SqlError>) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.zipRight(
              conn.executeUnprepared("BEGIN", [], undefined),
              Effect.flatMap(Effect.exit(restore(onConn(effect))), (exit) =>
                exit._tag === "Success"
                  ? Effect.as(conn.executeUnprepared("COMMIT", [], undefined), exit.value)
                  : Effect.zipRight(Effect.ignore(conn.executeUnprepared("ROLLBACK", [], undefined)), exit))
            )
          )
        return {
          readAfter: (after, limit) =>
            onConn(sql.unsafe<LoggedRow>(q.readAfter, [after.txId.toString(), after.sequence, limit])).pipe(
              Effect.map((rows) =>
                rows.map((row): Storage.LoggedEvent => ({
                  ...toStored(row.stream_id, row),
                  streamType: row.stream_type,
                  txId: BigInt(row.tx_id)
                }))
              ),
              Effect.mapError(wrap(`Reading events for projection ${ref.name} failed`))
            ),
          readDocuments: (refs) => onConn(readDocuments(refs)),
          progress: onConn(progressOf(ref)),
          store: (writes, progress) =>
            inTransaction(Effect.gen(function*() {
              if (writes.length > 0) yield* sql.unsafe(q.upsertDocuments, writeArrays(writes))
              yield* sql.unsafe(q.saveProgress, [
                ref.name,
                ref.version,
                progress.checkpoint.txId.toString(),
                progress.checkpoint.sequence,
                progress.processed
              ])
            })).pipe(Effect.mapError(wrap(`Storing projection ${ref.name} failed`))),
          reset: inTransaction(Effect.zipRight(
            sql.unsafe(q.deleteDocuments, [ref.name, ref.version]),
            sql.unsafe(q.deleteProgress, [ref.name, ref.version])
          )).pipe(Effect.mapError(wrap(`Resetting projection ${ref.name} failed`)))
        } satisfies Storage.ProjectionWorker
      }).pipe(Effect.mapError((e) => e instanceof EventStoreError ? e : wrap(`Claiming projection ${ref.name} failed`)(e)))

    const pg = yield* Effect.serviceOption(PgClient.PgClient)
    const projections: Storage.ProjectionStorage = {
      claim,
      progress: progressOf,
      head: sql.unsafe<{ tx_id: string; seq: string }>(q.head).pipe(
        Effect.map((rows) =>
          rows.length === 0
            ? { checkpoint: Storage.origin, sequence: 0 }
            : { checkpoint: checkpointOf(rows[0]), sequence: Number(rows[0].seq) }
        ),
        Effect.mapError(wrap("Reading the head of the log failed"))
      ),
      countAfter: (after) =>
        sql.unsafe<{ n: string }>(q.countAfter, [after.txId.toString(), after.sequence]).pipe(
          Effect.map((rows) => Number(rows[0].n)),
          Effect.mapError(wrap("Counting events failed"))
        ),
      // LISTEN when the client can (PgClient); readers poll as well, so a lost notification only delays them.
      changes: Option.match(pg, {
        onNone: () => Stream.never,
        onSome: (client) =>
          Stream.unwrapScoped(Effect.gen(function*() {
            // Registered while listening, so that stores start notifying; the
            // registration expires by itself if this process dies.
            const id = `${process.pid}-${Math.random().toString(36).slice(2)}`
            yield* Effect.forkScoped(Effect.repeat(Effect.ignore(sql.unsafe(q.register, [id])), Schedule.spaced("10 seconds")))
            yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe(q.unregister, [id])))
            return client.listen(channel).pipe(
              Stream.as(undefined as void),
              Stream.retry(Schedule.spaced("1 second")),
              Stream.catchAll(() => Stream.never)
            )
          }))
      })
    }

    const joined = Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)
    const storage: Storage.Storage = { readStream, loadSnapshot, readDocuments, commit, begin, joined, projections }
    inFlightOf.set(storage, () => ({ reads: readsInFlight, saves: inFlight, queued: readQueue.length + queue.length }))
    return storage
  })
