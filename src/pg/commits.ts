/**
 * The saves of the PostgreSQL storage, one batch at a time: a single stream
 * in a small statement of its own, several in the batch statement (all or
 * nothing, in a transaction), and the conflicts a failed save reports.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { EventStoreError } from "../Errors.js"
import * as Fiber from "../internal/fiber.js"
import type * as Storage from "../Storage.js"
import * as Driver from "./driver.js"
import * as Spans from "./spans.js"
import { connectionLost, retryable, sqlState, toStoreError } from "./failures.js"
import { appendedTo, type CommitRow, type DocumentRow, refArrays, toDocument, writeArrays } from "./rows.js"
import { singleStreamStatement, statementName } from "./statements.js"
import { notifyTo, type Store } from "./store.js"

/**
 * What a commit statement (or the look-up after its lost answer) tells.
 *
 * @since 0.1.0
 */
export interface Sent {
  /** The streams that passed, at their new version. */
  readonly passed: Map<string, number>
  readonly appended: Map<string, Array<Storage.AppendedEvent>>
}

// A transaction of our own on a connection reserved for it (interruptible
// while it waits for one), or a savepoint in a caller's: COMMIT, ROLLBACK
// and their failures are errors, never defects. A failed COMMIT whose
// answer never came leaves the outcome unknown, and says so.
class Rollback {
  constructor(readonly result: Storage.CommitResult) {}
}
const transactional = <A>(
  store: Store,
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
          restore(Spans.unprepared(store.driver, conn, begin)),
          Effect.exit(restore(Fiber.provideService(body, SqlClient.TransactionConnection, [conn, depth] as const)))
        ).pipe(Effect.flatMap((exit) =>
          exit._tag === "Success"
            ? Effect.as(
              Spans.unprepared(store.driver, conn, commit).pipe(Effect.mapError((e) =>
                connectionLost(e)
                  ? new EventStoreError({ message: "The connection was lost while committing: the outcome of this save is unknown", cause: e })
                  : e
              )),
              exit.value
            )
            : Effect.zipRight(Effect.ignore(Spans.unprepared(store.driver, conn, rollback)), exit)
        ))
      )
    }
    return Option.isSome(outer)
      ? run(outer.value[0], outer.value[1] + 1, false)
      : Effect.scoped(Effect.flatMap(store.driver.reserve, (conn) => run(conn, 0, true)))
  })

// The version rows of a failed save's streams: their version, and whether archived.
type VersionRow = { readonly id: string; readonly version: string; readonly archived: boolean }
const versionsOf = (store: Store, batch: Storage.CommitBatch, ids: ReadonlyArray<string>) =>
  Effect.map(Spans.query<VersionRow>(store, "versions", [ids, batch.tenantId]), (rows) => new Map(rows.map((r) => [r.id, r])))
const conflictOf = (write: Storage.StreamWrite, found: VersionRow | undefined): Storage.Conflict => ({
  streamId: write.streamId,
  expected: write.expected === "any" ? -1 : write.expected,
  actual: found === undefined ? 0 : Number(found.version),
  archived: found?.archived === true
})

/** Whether a batch archives streams: those take a transaction, and a statement after the events. */
export const archives = (batch: Storage.CommitBatch): boolean => (batch.archive?.length ?? 0) > 0

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
const singleStatement = (store: Store, expected: "exact" | "new" | "any", snapshot: boolean, notify: boolean, oneEvent: boolean) => {
  const key = `${expected}_${snapshot ? "snap" : "plain"}${oneEvent ? "_one" : ""}${notify ? "_notify" : ""}`
  let statement = store.singleStatements.get(key)
  if (statement === undefined) {
    statement = { name: statementName(store.schema, `save_${key}`), text: singleStreamStatement(store.quoted, expected, snapshot, notify, oneEvent) }
    store.singleStatements.set(key, statement)
  }
  return statement
}
const runSingle = (store: Store, plan: NonNullable<ReturnType<typeof singleStream>>, batch: Storage.CommitBatch) => {
  const { docs, expectedVersion, write } = plan
  const kind = expectedVersion < 0 ? "any" : expectedVersion === 0 ? "new" : "exact"
  const notify = notifyTo(store)
  const events = write.events
  // With no event (a version assertion) the stream row tells the outcome; otherwise the events do.
  const oneEvent = events.length === 1
  const statement = singleStatement(store, kind, docs.length > 0, notify !== null, oneEvent)
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
    Driver.prepared<{ seq: string | null; version: string | null; timestamp: number | null }>(store.driver, statement.name, statement.text, values),
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
        return Effect.map(versionsOf(store, batch, [write.streamId]), (found): Storage.CommitResult => ({
          _tag: "Conflicted",
          conflicts: [conflictOf(write, found.get(write.streamId))]
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

/**
 * Runs a batch's statements, in the caller's transaction if any: a single
 * stream in its small statement, else the batch statement (and inline work).
 *
 * @since 0.1.0
 */
export const run = (store: Store, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> =>
  Effect.suspend(() => {
    const single = singleStream(batch)
    const events: Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> = batch.streams.length === 0
      ? Effect.succeed({ _tag: "Committed", streams: [] })
      : single === undefined
      ? runBatch(store, batch)
      : runSingle(store, single, batch)
    if (!archives(batch)) return events
    // After the events (the caller runs both in one transaction), once they passed.
    return Effect.tap(events, (result) =>
      result._tag === "Committed" ? Spans.query(store, "archive", [batch.archive, batch.tenantId]) : Effect.void)
  })

const runBatch = (store: Store, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, SqlError | EventStoreError> =>
  Effect.gen(function*() {
    const sent = yield* execute(store, batch, undefined)
    const { committed, conflicts } = yield* settle(store, batch, sent)
    if (conflicts.length > 0) return { _tag: "Conflicted", conflicts } as Storage.CommitResult
    const outcome = batch.inline === undefined ? undefined : yield* runInline(store, batch.inline, committed)
    return { _tag: "Committed", streams: committed, states: outcome?.states } as Storage.CommitResult
  })

/**
 * Sends the batch statement: all streams or none, or with a commit token
 * (write-combining) each stream on its own. Tells which streams passed, at
 * which version, and the events appended.
 *
 * @since 0.1.0
 */
export const execute = (store: Store, batch: Storage.CommitBatch, token: string | undefined) =>
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
      yield* Spans.query(store, "lockRows", [writes.map((w) => w.streamId), batch.tenantId])
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
      notifyTo(store)
    ]
    const rows = token === undefined
      ? yield* Driver.prepared<CommitRow>(store.driver, store.names.commit, store.q.commit, values)
      : yield* Driver.prepared<CommitRow>(store.driver, store.names.commitEach, store.q.commitEach, [...values, token])
    const passed = new Map<string, number>()
    const appended = new Map<string, Array<Storage.AppendedEvent>>()
    for (const row of rows) {
      if (row.stream_id === null) continue // the notification's row
      if (row.seq === null) passed.set(row.stream_id, Number(row.version))
      else appendedTo(appended, row)
    }
    return { passed, appended } satisfies Sent
  })

/**
 * The outcome of a batch whose passing streams are known: the others
 * conflicted. Only the losing path pays for a second round trip, to report
 * the real version.
 *
 * @since 0.1.0
 */
export const settle = (store: Store, batch: Storage.CommitBatch, sent: Sent) =>
  Effect.gen(function*() {
    const failed = batch.streams.filter((w) => !sent.passed.has(w.streamId))
    const conflicts: Array<Storage.Conflict> = []
    if (failed.length > 0) {
      const found = yield* versionsOf(store, batch, failed.map((w) => w.streamId))
      for (const w of failed) conflicts.push(conflictOf(w, found.get(w.streamId)))
    }
    const committed = batch.streams.filter((w) => sent.passed.has(w.streamId)).map((w): Storage.CommittedStream => {
      const version = sent.passed.get(w.streamId)!
      const events = (sent.appended.get(w.streamId) ?? []).sort((a, b) => a.version - b.version)
      return { streamId: w.streamId, previousVersion: version - w.events.length, version, events }
    })
    return { committed, conflicts }
  })

// Runs inside the commit's transaction, after the events are in.
const runInline = (store: Store, work: Storage.InlineWork, committed: ReadonlyArray<Storage.CommittedStream>) =>
  Effect.gen(function*() {
    const step = yield* work.prepare(committed)
    let existing: ReadonlyArray<Storage.StoredDocument> = []
    if (step.documents.length > 0) {
      yield* Spans.query(store, "placeholders", refArrays(step.documents))
      existing = (yield* Spans.query<DocumentRow>(store, "lockDocuments", refArrays(step.documents)))
        .filter((row) => row.data !== null)
        .map(toDocument)
    }
    const outcome = yield* step.compute(existing)
    if (outcome.writes.length > 0) yield* Spans.query(store, "upsertDocuments", writeArrays(outcome.writes))
    return outcome
  })

/**
 * The outcome of a save that failed with a `retryable` error, once rolled
 * back: the conflicts, if the versions moved; a deadlock; or the error.
 *
 * @since 0.1.0
 */
export const conflictsAfter = (store: Store, batch: Storage.CommitBatch, error: SqlError): Effect.Effect<Storage.CommitResult, EventStoreError> =>
  Effect.flatMap(
    versionsOf(store, batch, batch.streams.map((w) => w.streamId)),
    (found) => {
      const conflicts = batch.streams.flatMap((w) => {
        const row = found.get(w.streamId)
        const actual = row === undefined ? 0 : Number(row.version)
        return row?.archived === true || (w.expected !== "any" && w.expected !== actual) ? [conflictOf(w, row)] : []
      })
      if (conflicts.length > 0) return Effect.succeed<Storage.CommitResult>({ _tag: "Conflicted", conflicts })
      return sqlState(error) === "40P01"
        ? Effect.succeed<Storage.CommitResult>({ _tag: "Deadlocked", streamIds: batch.streams.map((w) => w.streamId) })
        : Effect.fail(error)
    }
  ).pipe(Effect.mapError(toStoreError))
const recover = (store: Store, batch: Storage.CommitBatch) => (e: SqlError | EventStoreError) =>
  retryable(e) ? conflictsAfter(store, batch, e) : Effect.fail(toStoreError(e))

/**
 * Saves a batch now, uncombined. Several streams: the statement's partial
 * updates must roll back with a conflict; inline work takes statements of
 * its own. Both run in a transaction (a savepoint inside a caller's).
 *
 * @since 0.1.0
 */
export const commitDirect = (store: Store, batch: Storage.CommitBatch): Effect.Effect<Storage.CommitResult, EventStoreError> =>
  Effect.catchAll(
    batch.streams.length === 1 && batch.inline === undefined && !archives(batch)
      ? Effect.mapError(run(store, batch), (e) =>
        // One statement, committed by the server on its own: with its answer lost, it may have.
        connectionLost(e)
          ? new EventStoreError({ message: "The connection was lost during the save: the outcome of this save is unknown", cause: e })
          : e)
      : transactional(
        store,
        Effect.flatMap(run(store, batch), (result) =>
          result._tag === "Conflicted" ? Effect.fail(new Rollback(result)) : Effect.succeed(result))
      ).pipe(Effect.catchIf((e): e is Rollback => e instanceof Rollback, (e) => Effect.succeed(e.result))),
    recover(store, batch)
  )

