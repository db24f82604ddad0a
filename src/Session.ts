/**
 * The unit of work. A session collects pending appends, keeps the identity map
 * of states it fetched or saved, and writes everything in one transaction on
 * `saveChanges`. This is the one engine both stores share: it speaks to them
 * only through the `Storage` port.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Aggregate from "./Aggregate.js"
import {
  ConcurrencyError,
  DeadlockError,
  EventDecodeError,
  EventEncodeError,
  EventStoreError,
  InvalidExpectedVersionError,
  type InvalidOptionError,
  InvalidStreamIdError,
  StreamExistsError,
  StreamLockedError
} from "./Errors.js"
import type { EventEnvelope, EventMetadata } from "./EventEnvelope.js"
import * as Envelope from "./internal/envelope.js"
import * as Inline from "./internal/inline.js"
import * as Rehydrate from "./internal/rehydrate.js"
import { lockTimeout, textProblem } from "./internal/input.js"
import { currentMetadata, currentTenant, EventStore } from "./internal/store.js"
import type * as Projection from "./Projection.js"
import type * as Storage from "./Storage.js"
import * as StreamId from "./StreamId.js"

/**
 * A stream fetched for writing: its state and version at fetch time, and the
 * way to append to it within the session.
 *
 * @since 0.1.0
 */
export interface EventStream<S, E> {
  readonly id: string
  /** The state at fetch time; None for a stream with no events. */
  readonly aggregate: Option.Option<S>
  /** The stream version at fetch time (0 for a stream with no events). */
  readonly version: number
  readonly appendOne: (event: E) => Effect.Effect<void>
  readonly appendMany: (events: Iterable<E>) => Effect.Effect<void>
  /** Makes the save fail with `ConcurrencyError` if the stream moved since the fetch, even with nothing appended. */
  readonly alwaysEnforceConsistency: (on?: boolean) => Effect.Effect<void>
}

/**
 * Options of `fetchForWriting`.
 *
 * @since 0.1.0
 */
export interface FetchOptions {
  readonly expectedVersion?: number | undefined
  readonly alwaysEnforceConsistency?: boolean | undefined
}

/**
 * Options of `fetchForExclusiveWriting`.
 *
 * @since 0.1.0
 */
export interface ExclusiveFetchOptions extends FetchOptions {
  /** How long to wait for the stream's lock (default: the store's, 5 seconds). */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * Bounds for time travel: the state as of a version or a moment.
 *
 * @since 0.1.0
 */
export interface AggregateStreamOptions {
  readonly version?: number | undefined
  readonly timestamp?: Date | undefined
}

/**
 * Bounds for reading raw events.
 *
 * @since 0.1.0
 */
export interface ReadStreamOptions {
  readonly fromVersion?: number | undefined
  readonly toVersion?: number | undefined
  readonly timestamp?: Date | undefined
}

/**
 * What one stream got from a save.
 *
 * @since 0.1.0
 */
export interface SavedStream {
  readonly streamId: string
  readonly previousVersion: number
  readonly version: number
  readonly sequences: ReadonlyArray<number>
}

/**
 * The outcome of `saveChanges`: one entry per stream written or asserted.
 *
 * @since 0.1.0
 */
export interface SaveResult {
  readonly streams: ReadonlyArray<SavedStream>
}

/**
 * Errors a fetch can fail with.
 *
 * @since 0.1.0
 */
export type FetchError =
  | ConcurrencyError
  | EventStoreError
  | EventDecodeError
  | InvalidStreamIdError
  | InvalidExpectedVersionError

/**
 * Errors `saveChanges` can fail with.
 *
 * @since 0.1.0
 */
export type SaveError = ConcurrencyError | DeadlockError | StreamExistsError | EventEncodeError | EventStoreError

/**
 * The session's operations (see the module-level functions for their meaning).
 *
 * @since 0.1.0
 */
export interface SessionShape {
  readonly fetchForWriting: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: FetchOptions
  ) => Effect.Effect<EventStream<S, E>, FetchError>
  readonly fetchForExclusiveWriting: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: ExclusiveFetchOptions
  ) => Effect.Effect<EventStream<S, E>, FetchError | StreamLockedError | DeadlockError | InvalidOptionError>
  readonly fetchLatest: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly aggregateStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    options?: AggregateStreamOptions
  ) => Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError>
  readonly readStream: (
    id: string,
    options?: ReadStreamOptions
  ) => Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError>
  readonly startStream: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>
  ) => Effect.Effect<void, InvalidStreamIdError>
  readonly append: <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    id: string,
    events: Iterable<E>,
    options?: { readonly expectedVersion?: number | undefined }
  ) => Effect.Effect<void, InvalidStreamIdError | InvalidExpectedVersionError>
  readonly saveChanges: Effect.Effect<SaveResult, SaveError>
  readonly loadDocument: <S>(
    projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
    key: string
  ) => Effect.Effect<Option.Option<S>, EventStoreError>
  /** @internal the identity-map entry of a stream: its state and version as this session last knew them. */
  readonly known: (aggregate: Aggregate.Any, id: string, tenantId: string) => Option.Option<Known<any>>
}

/**
 * The session service. Each `Session.layer` build is a fresh unit of work.
 *
 * @since 0.1.0
 */
export class Session extends Context.Tag("effect-chronicle/Session")<Session, SessionShape>() {}

/** @internal */
export interface Known<S> {
  readonly state: Option.Option<S>
  readonly version: number
  /** True when the state is the outcome of this session's own save. */
  readonly saved: boolean
}

interface PendingEvent {
  /** The aggregate whose Schema encodes it (another one may share the stream id). */
  readonly aggregate: Aggregate.Any
  readonly event: unknown
  readonly metadata: EventMetadata
}

interface Pending {
  readonly aggregate: Aggregate.Any
  /** The tenant in effect when the stream was first fetched or appended to: half its identity. */
  readonly tenantId: string
  readonly streamId: string
  /** start: `startStream` (a taken id is StreamExistsError); otherwise an optimistic expectation. */
  mode: "fetched" | "start" | "append"
  expected: Storage.Expected
  enforce: boolean
  readonly events: Array<PendingEvent>
}

// A stream's identity is (tenant, id): two tenants' streams of one id never share an entry.
const streamKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`
const identityKey = (aggregate: Aggregate.Any, tenantId: string, id: string) => `${aggregate.name}\u0000${tenantId}\u0000${id}`

// Metadata (`EventStore.withMetadata`) is held to the rules of payloads, so
// that what PostgreSQL would refuse or change fails the same on both stores.
const metadataJson = (metadata: EventMetadata): Either.Either<EventMetadata, string> => {
  const { causationId, correlationId, headers } = metadata
  const idProblem = metadataIdProblem("correlationId", correlationId) ?? metadataIdProblem("causationId", causationId)
  if (idProblem !== undefined) return Either.left(idProblem)
  if (headers === undefined) return Either.right(metadata)
  if (headers === null || typeof headers !== "object" || Array.isArray(headers)) {
    return Either.left(`metadata: headers must be an object, got ${headers === null ? "null" : Array.isArray(headers) ? "an array" : typeof headers}`)
  }
  const json = Aggregate.toJson(headers)
  if (Either.isLeft(json)) return Either.left(`metadata: ${json.left.replace(/^\$/, "headers")}`)
  return Either.right(json.right === headers ? metadata : { ...metadata, headers: json.right as Record<string, unknown> })
}

const metadataIdProblem = (name: string, id: unknown): string | undefined => {
  if (id === undefined) return undefined
  if (typeof id !== "string") return `metadata: ${name} must be a string, got ${id === null ? "null" : typeof id}`
  const problem = textProblem(id)
  return problem === undefined ? undefined : `metadata: ${name} holds ${problem}, which PostgreSQL cannot store`
}

// Checked synchronously: a bad id or expectation fails before any effect runs.
const invalidInput = (id: string, expected: unknown): InvalidStreamIdError | InvalidExpectedVersionError | undefined => {
  const reason = StreamId.invalidReason(id)
  if (reason !== undefined) return new InvalidStreamIdError({ streamId: id, reason })
  return expected === undefined || (typeof expected === "number" && Number.isSafeInteger(expected) && expected >= 0)
    ? undefined
    : new InvalidExpectedVersionError({ streamId: id, expectedVersion: expected })
}

/**
 * Creates a session; its scope bounds any lock it takes.
 *
 * @since 0.1.0
 */
const unsafeMake = (store: EventStore["Type"]): { readonly session: SessionShape; readonly close: Effect.Effect<void> } => {
  const storage = store.storage
  const registry = store.projections
  const pending = new Map<string, Pending>()
  const identity = new Map<string, Known<any>>()
  // The transaction that holds this session's exclusive locks, from the first
  // exclusive fetch until the save (or the end of the session's scope).
  let transaction: { readonly transaction: Storage.Transaction; readonly scope: Scope.CloseableScope } | undefined
  // The scope of the transaction being opened or open; only exclusive fetches
  // need one, so a session without them costs no scope at all.
  let transactionScope: Scope.CloseableScope | undefined
  const endTransaction = Effect.suspend(() => {
    const scope = transactionScope
    transactionScope = undefined
    transaction = undefined
    return scope === undefined ? Effect.void : Scope.close(scope, Exit.void)
  })

  const ops = (): Storage.Operations => transaction?.transaction ?? storage

  const { load, loadLatest } = Rehydrate.make({ storage, ops, registry, liveStates: store.liveStates })

  const pendingFor = (aggregate: Aggregate.Any, tenant: string, id: string, mode: Pending["mode"], expected: Storage.Expected) => {
    let entry = pending.get(streamKey(tenant, id))
    if (entry === undefined) {
      entry = { aggregate, tenantId: tenant, streamId: id, mode, expected, enforce: false, events: [] }
      pending.set(streamKey(tenant, id), entry)
    } else {
      entry.mode = mode
      entry.expected = expected
    }
    return entry
  }

  const push = (entry: Pending, aggregate: Aggregate.Any, events: Iterable<unknown>, metadata: EventMetadata) => {
    let target = entry
    const key = streamKey(entry.tenantId, entry.streamId)
    if (pending.get(key) !== entry) {
      // A stream used again after its save: the next save expects the version this session saved.
      const known = identity.get(identityKey(entry.aggregate, entry.tenantId, entry.streamId))
      const expected = known !== undefined && known.saved ? known.version : entry.expected
      target = pending.get(key) ?? pendingFor(entry.aggregate, entry.tenantId, entry.streamId, entry.mode, expected)
    }
    for (const event of events) target.events.push({ aggregate, event, metadata })
  }
  const appendTo = (entry: Pending, aggregate: Aggregate.Any, events: Iterable<unknown>) =>
    Effect.withFiberRuntime<void>((fiber) => {
      push(entry, aggregate, events, fiber.getFiberRef(currentMetadata))
      return Effect.void
    })

  const streamFor = <S, E>(
    aggregate: Aggregate.Aggregate<S, E, any, any>,
    tenant: string,
    id: string,
    loaded: Rehydrate.Loaded<S>,
    options: FetchOptions | undefined
  ): Effect.Effect<EventStream<S, E>, ConcurrencyError> => {
    if (options?.expectedVersion !== undefined && options.expectedVersion !== loaded.version) {
      return Effect.fail(
        new ConcurrencyError({ streamId: id, expectedVersion: options.expectedVersion, actualVersion: loaded.version })
      )
    }
    // The last fetch of a stream sets the expectation its pending action is saved with.
    const entry = pendingFor(aggregate, tenant, id, "fetched", loaded.version)
    if (options?.alwaysEnforceConsistency) entry.enforce = true
    identity.set(identityKey(aggregate, tenant, id), { state: loaded.state, version: loaded.version, saved: false })
    return Effect.succeed({
      id,
      aggregate: loaded.state,
      version: loaded.version,
      appendOne: (event) => appendTo(entry, aggregate, [event]),
      appendMany: (events) => appendTo(entry, aggregate, events),
      alwaysEnforceConsistency: (on = true) => Effect.sync(() => void (entry.enforce = on))
    })
  }

  const fetchForWriting: SessionShape["fetchForWriting"] = (aggregate, id, options) =>
    Effect.withFiberRuntime((fiber): Effect.Effect<EventStream<any, any>, FetchError> => {
      const invalid = invalidInput(id, options?.expectedVersion)
      if (invalid !== undefined) return Effect.fail(invalid)
      const tenant = fiber.getFiberRef(currentTenant)
      return Effect.flatMap(loadLatest(aggregate, tenant, id), (loaded) => streamFor(aggregate, tenant, id, loaded, options))
    })

  const fetchForExclusiveWriting: SessionShape["fetchForExclusiveWriting"] = (aggregate, id, options) =>
    Effect.gen(function*() {
      const invalid = invalidInput(id, options?.expectedVersion)
      if (invalid !== undefined) return yield* invalid
      const timeout = options?.timeout === undefined
        ? store.defaultLockTimeout
        : yield* lockTimeout("timeout", options.timeout)
      if (transaction === undefined) {
        // A scope of its own, so that the save can end it before the session does.
        const txScope = yield* Scope.make(ExecutionStrategy.sequential)
        transactionScope = txScope
        transaction = { transaction: yield* Scope.extend(storage.begin, txScope), scope: txScope }
      }
      const tenant = yield* FiberRef.get(currentTenant)
      const locked = yield* transaction.transaction.lock(id, aggregate.name, tenant, timeout)
      if (locked === "TimedOut") {
        return yield* new StreamLockedError({ streamId: id, timeoutMillis: Duration.toMillis(timeout) })
      }
      if (locked === "Deadlocked") return yield* new DeadlockError({ streamIds: [id] })
      const loaded = yield* loadLatest(aggregate, tenant, id)
      return yield* streamFor(aggregate, tenant, id, loaded, options)
    })

  const aggregateStream: SessionShape["aggregateStream"] = (aggregate, id, options) =>
    Effect.zipRight(
      StreamId.validate(id),
      Effect.map(
        Effect.flatMap(FiberRef.get(currentTenant), (tenant) => load(aggregate, tenant, id, { toVersion: options?.version, toTimestamp: options?.timestamp })),
        (loaded) => loaded.state
      )
    )

  const fetchLatest: SessionShape["fetchLatest"] = (aggregate, id) =>
    Effect.withFiberRuntime((fiber) => {
      const tenant = fiber.getFiberRef(currentTenant)
      const known = identity.get(identityKey(aggregate, tenant, id))
      // After our own save the identity map holds the newest state we can know of.
      if (known !== undefined && known.saved) return Effect.succeed(known.state)
      return Effect.zipRight(StreamId.validate(id), Effect.map(loadLatest(aggregate, tenant, id), (loaded) => loaded.state))
    })

  const loadDocument: SessionShape["loadDocument"] = (projection, key) =>
    Effect.gen(function*() {
      const codec = projection._tag === "Snapshot" ? Aggregate.stateCodec(projection.aggregate) : projection.stateCodec
      if (codec === undefined) return Option.none()
      const tenantId = yield* FiberRef.get(currentTenant)
      const docs = yield* ops().readDocuments([{ projection: projection.name, projectionVersion: projection.version, tenantId, id: key }])
      if (docs.length === 0) return Option.none()
      const decoded = codec.decode(docs[0].data)
      if (Either.isLeft(decoded)) {
        return yield* new EventStoreError({
          message: `Document "${key}" of projection ${projection.name} v${projection.version} cannot be decoded: ${decoded.left}`
        })
      }
      return Option.some(decoded.right)
    })

  const readStream: SessionShape["readStream"] = (id, options) =>
    Effect.zipRight(
      StreamId.validate(id),
      Effect.map(
        Effect.flatMap(FiberRef.get(currentTenant), (tenant) =>
          ops().readStream(tenant, id, {
            fromVersion: options?.fromVersion,
            toVersion: options?.toVersion,
            toTimestamp: options?.timestamp
          })),
        (rows) => rows.map((row) => Envelope.ofStored<unknown>(row, row.data))
      )
    )

  const startStream: SessionShape["startStream"] = (aggregate, id, events) =>
    Effect.flatMap(
      Effect.zipRight(StreamId.validate(id), FiberRef.get(currentTenant)),
      (tenant) => appendTo(pendingFor(aggregate, tenant, id, "start", 0), aggregate, events)
    )

  const append: SessionShape["append"] = (aggregate, id, events, options) =>
    Effect.withFiberRuntime((fiber) => {
      const invalid = invalidInput(id, options?.expectedVersion)
      if (invalid !== undefined) return Effect.fail(invalid)
      const tenant = fiber.getFiberRef(currentTenant)
      const existing = pending.get(streamKey(tenant, id))
      const entry = existing === undefined
        ? pendingFor(aggregate, tenant, id, "append", options?.expectedVersion ?? "any")
        : existing
      if (existing !== undefined && options?.expectedVersion !== undefined) {
        entry.expected = options.expectedVersion
      }
      push(entry, aggregate, events, fiber.getFiberRef(currentMetadata))
      return Effect.void
    })

  const encodeBatch = (
    tenantId: string,
    entries: ReadonlyArray<Pending>
  ): Either.Either<Storage.CommitBatch, EventEncodeError> => {
    const streams: Array<Storage.StreamWrite> = []
    // Events appended together share one metadata object: checked once.
    let checked: EventMetadata | undefined
    let checkedAs: EventMetadata | undefined
    for (const entry of entries) {
      const events: Array<Storage.NewEvent> = []
      for (let i = 0; i < entry.events.length; i++) {
        const { aggregate, event } = entry.events[i]
        const encoded = aggregate.codec.encode(event)
        if (Either.isLeft(encoded)) {
          return Either.left(
            new EventEncodeError({ streamId: entry.streamId, eventType: Envelope.tagOf(event), message: encoded.left })
          )
        }
        let metadata = entry.events[i].metadata
        if (metadata !== checked) {
          const json = metadataJson(metadata)
          if (Either.isLeft(json)) {
            return Either.left(
              new EventEncodeError({ streamId: entry.streamId, eventType: Envelope.tagOf(event), message: json.left })
            )
          }
          checked = metadata
          checkedAs = json.right
        }
        if (checkedAs !== metadata) {
          // Normalised (-0 in a header): the envelopes carry what is stored.
          metadata = checkedAs!
          entry.events[i] = { ...entry.events[i], metadata }
        }
        events.push({ type: encoded.right.type, data: encoded.right.data, metadata })
      }
      streams.push({
        streamId: entry.streamId,
        aggregateType: entry.aggregate.name,
        expected: entry.expected,
        events
      })
    }
    return Either.right({ tenantId, streams })
  }

  const conflictError = (
    saving: ReadonlyMap<string, Pending>,
    conflict: Storage.Conflict
  ): ConcurrencyError | StreamExistsError =>
    saving.get(conflict.streamId)?.mode === "start"
      ? new StreamExistsError({ streamId: conflict.streamId })
      : new ConcurrencyError({
        streamId: conflict.streamId,
        expectedVersion: conflict.expected,
        actualVersion: conflict.actual
      })

  // The state this session knows a stream had at `version`: Some(None) for a
  // stream with no events, None when the session does not know.
  const knownAt = (entry: Inline.Entry, version: Storage.Expected): Option.Option<Option.Option<unknown>> => {
    if (version === 0) return Option.some(Option.none())
    const known = identity.get(identityKey(entry.aggregate, (entry as Pending).tenantId, entry.streamId))
    return known !== undefined && known.version === version ? Option.some(known.state) : Option.none()
  }

  // Folds the saved events onto the state this session already had at the
  // stream's previous version (the identity-map optimisation): no read needed.
  const remember = (
    entry: Pending,
    committed: Storage.CommittedStream,
    tenantId: string,
    computed: Option.Option<unknown> | undefined
  ) => {
    const key = identityKey(entry.aggregate, entry.tenantId, entry.streamId)
    if (computed !== undefined) {
      identity.set(key, { state: computed, version: committed.version, saved: true })
      return
    }
    const baseline = knownAt(entry, committed.previousVersion)
    if (Option.isNone(baseline)) {
      identity.delete(key)
      return
    }
    identity.set(key, {
      state: Aggregate.foldFrom(entry.aggregate, baseline.value, Inline.envelopesOf(entry, committed, tenantId)),
      version: committed.version,
      saved: true
    })
  }

  const save = (
    target: Storage.Transaction | undefined,
    saving: ReadonlyMap<string, Pending>,
    tenantId: string
  ): Effect.Effect<SaveResult, SaveError> => {
    const entries = Array.from(saving.values()).filter((entry) => entry.events.length > 0 || entry.enforce)
    const encoded = encodeBatch(tenantId, entries)
    if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
    const batch = encoded.right
    if (entries.length === 0) {
      return target === undefined ? Effect.succeed({ streams: [] }) : Effect.as(target.commit(batch), { streams: [] })
    }
    const plan = Inline.plan(registry, entries, batch, knownAt)
    if (Either.isLeft(plan)) return Effect.fail(plan.left)
    const { computed, documents, inline } = plan.right
    return Effect.flatMap((target ?? storage).commit({ ...batch, documents, inline }), (result): Effect.Effect<SaveResult, SaveError> => {
      if (result._tag === "Conflicted") return Effect.fail(conflictError(saving, result.conflicts[0]))
      if (result._tag === "Deadlocked") return Effect.fail(new DeadlockError({ streamIds: result.streamIds }))
      for (const committed of result.streams) {
        const entry = saving.get(committed.streamId)
        if (entry !== undefined) remember(entry, committed, tenantId, computed.get(committed.streamId) ?? result.states?.get(committed.streamId))
      }
      return Effect.succeed({
        streams: result.streams.map((s) => ({
          streamId: s.streamId,
          previousVersion: s.previousVersion,
          version: s.version,
          sequences: s.events.map((e) => e.sequence)
        }))
      })
    })
  }

  // A save ends the unit of work, whatever its outcome: pending appends are
  // dropped (a retry fetches again), and the transaction of an exclusive fetch
  // ends, giving back its locks and its connection.
  const saveChanges: Effect.Effect<SaveResult, SaveError> = Effect.withFiberRuntime((fiber) => {
    const all = Array.from(pending.values())
    pending.clear()
    // A commit is one tenant's (the port's batch carries one tenant): pending work
    // of several tenants in one session is refused whole, so nothing is written.
    const working = all.filter((entry) => entry.events.length > 0 || entry.enforce)
    const tenants = new Set(working.map((entry) => entry.tenantId))
    const tenantId = working.length === 0 ? fiber.getFiberRef(currentTenant) : working[0].tenantId
    const saving = new Map(all.filter((entry) => entry.tenantId === tenantId).map((entry) => [entry.streamId, entry]))
    const effect: Effect.Effect<SaveResult, SaveError> = tenants.size > 1
      ? Effect.fail(
        new EventStoreError({
          message: `A session saves the streams of one tenant at a time; this one has pending changes in tenants ${
            Array.from(tenants).map((t) => JSON.stringify(t)).join(", ")
          }`
        })
      )
      : save(transaction?.transaction, saving, tenantId)
    return transactionScope === undefined ? effect : Effect.ensuring(effect, endTransaction)
  })

  const known: SessionShape["known"] = (aggregate, id, tenantId) =>
    Option.fromNullable(identity.get(identityKey(aggregate, tenantId, id)))

  return {
    session: {
      fetchForWriting,
      fetchForExclusiveWriting,
      fetchLatest,
      aggregateStream,
      readStream,
      startStream,
      append,
      saveChanges,
      loadDocument,
      known
    } satisfies SessionShape,
    close: endTransaction
  }
}

/**
 * Creates a session; the end of the scope releases its locks and rolls back
 * anything unsaved.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<SessionShape, never, EventStore | Scope.Scope> = Effect.flatMap(
  EventStore,
  (store) => Effect.map(Effect.acquireRelease(Effect.sync(() => unsafeMake(store)), (s) => s.close), (s) => s.session)
)

/**
 * A fresh session each time it is provided; its end releases its locks and
 * rolls back anything unsaved.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Session, never, EventStore> = Layer.scoped(Session, make)

/**
 * Runs an effect in its own session.
 *
 * @since 0.1.0
 */
export const run = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, Session> | EventStore> =>
  Effect.flatMap(EventStore, (store) => {
    const { close, session } = unsafeMake(store)
    return Effect.ensuring(Effect.provideService(effect, Session, session), close)
  })

/**
 * Fetches a stream's state and version for writing. With `expectedVersion`,
 * fails at once with `ConcurrencyError` when the stream is at another version.
 *
 * @since 0.1.0
 */
export const fetchForWriting = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: FetchOptions
): Effect.Effect<EventStream<S, E>, FetchError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchForWriting(aggregate, id, options))

/**
 * Fetches for writing while holding the stream's lock until `saveChanges` or
 * the session's end; fails with `StreamLockedError` when the lock is not had in time.
 *
 * @since 0.1.0
 */
export const fetchForExclusiveWriting = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: ExclusiveFetchOptions
): Effect.Effect<EventStream<S, E>, FetchError | StreamLockedError | DeadlockError | InvalidOptionError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchForExclusiveWriting(aggregate, id, options))

/**
 * The current state of a stream, read-only; after `saveChanges` in the same
 * session it is the saved state, without another read.
 *
 * @since 0.1.0
 */
export const fetchLatest = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string
): Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.fetchLatest(aggregate, id))

/**
 * A live fold of the stream, optionally as of a version or a moment (time travel).
 *
 * @since 0.1.0
 */
export const aggregateStream = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: AggregateStreamOptions
): Effect.Effect<Option.Option<S>, EventStoreError | EventDecodeError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.aggregateStream(aggregate, id, options))

/**
 * The stream's raw events (encoded payloads) in version order.
 *
 * @since 0.1.0
 */
export const readStream = (
  id: string,
  options?: ReadStreamOptions
): Effect.Effect<ReadonlyArray<EventEnvelope<unknown>>, EventStoreError | InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.readStream(id, options))

/**
 * Starts a new stream; the save fails with `StreamExistsError` when the id is taken.
 *
 * @since 0.1.0
 */
export const startStream = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>
): Effect.Effect<void, InvalidStreamIdError, Session> =>
  Effect.flatMap(Session, (session) => session.startStream(aggregate, id, events))

/**
 * Appends events to a stream, joining the pending action of a stream fetched
 * in this session. Without an expected version (and no fetch) the append never
 * conflicts: it serialises on the stream.
 *
 * @since 0.1.0
 */
export const append = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>,
  options?: { readonly expectedVersion?: number | undefined }
): Effect.Effect<void, InvalidStreamIdError | InvalidExpectedVersionError, Session> =>
  Effect.flatMap(Session, (session) => session.append(aggregate, id, events, options))

/**
 * The stored document of a snapshot or multi-stream projection, exactly as
 * persisted (an Async one may lag: this does not fold the events after it).
 *
 * @since 0.1.0
 */
export const loadDocument = <S>(
  projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
  key: string
): Effect.Effect<Option.Option<S>, EventStoreError, Session> =>
  Effect.flatMap(Session, (session) => session.loadDocument(projection, key))

/**
 * Writes everything pending in one transaction; on failure nothing is written.
 * Inside a caller's `SqlClient.withTransaction` it joins that transaction.
 *
 * @since 0.1.0
 */
export const saveChanges: Effect.Effect<SaveResult, SaveError, Session> = Effect.flatMap(
  Session,
  (session) => session.saveChanges
)
