/**
 * The body of a session: its operations over one unit of work, speaking to
 * the stores only through the `Storage` port. `Session.ts` is its face.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import {
  ConcurrencyError,
  type EventDecodeError,
  EventStoreError,
  InvalidExpectedVersionError,
  InvalidStreamIdError,
  StreamArchivedError
} from "../Errors.js"
import type * as Session from "../Session.js"
import type * as Storage from "../Storage.js"
import * as StreamId from "../StreamId.js"
import * as Envelope from "./envelope.js"
import * as Exclusive from "./exclusive.js"
import type * as Inline from "./inline.js"
import { lockTimeout } from "./input.js"
import * as Rehydrate from "./rehydrate.js"
import * as Save from "./save.js"
import * as Tracing from "./tracing.js"
import { currentMetadata, currentTenant, type EventStoreShape, onWaitClock } from "./store.js"
import * as UnitOfWork from "./unitOfWork.js"

/** @internal the state of one session, shared by its operations. */
interface Context extends Save.Deps {
  readonly store: EventStoreShape
  readonly exclusive: Exclusive.Exclusive
  /** The operations to read with: the session's transaction once it holds locks, else the storage. */
  readonly ops: () => Storage.Operations
  readonly load: ReturnType<typeof Rehydrate.make>["load"]
  readonly loadLatest: ReturnType<typeof Rehydrate.make>["loadLatest"]
}

// Checked synchronously: a bad id or expectation fails before any effect runs.
const invalidInput = (id: string, expected: unknown): InvalidStreamIdError | InvalidExpectedVersionError | undefined => {
  const reason = StreamId.invalidReason(id)
  if (reason !== undefined) return new InvalidStreamIdError({ streamId: id, reason })
  return expected === undefined || (typeof expected === "number" && Number.isSafeInteger(expected) && expected >= 0)
    ? undefined
    : new InvalidExpectedVersionError({ streamId: id, expectedVersion: expected })
}

const appendTo = (ctx: Context, entry: UnitOfWork.Pending, aggregate: Aggregate.Any, events: Iterable<unknown>) =>
  Effect.withFiberRuntime<void>((fiber) => {
    UnitOfWork.push(ctx.uow, entry, aggregate, events, fiber.getFiberRef(currentMetadata))
    return Effect.void
  })

const streamFor = <S, E>(
  ctx: Context,
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  tenant: string,
  id: string,
  loaded: Rehydrate.Loaded<S>,
  options: Session.FetchOptions | undefined
): Effect.Effect<Session.EventStream<S, E>, ConcurrencyError | StreamArchivedError> => {
  // The read that loaded the state told whether the stream is archived: no second round trip.
  if (loaded.archived) return Effect.fail(new StreamArchivedError({ streamId: id }))
  if (options?.expectedVersion !== undefined && options.expectedVersion !== loaded.version) {
    return Effect.fail(
      new ConcurrencyError({ streamId: id, expectedVersion: options.expectedVersion, actualVersion: loaded.version })
    )
  }
  // The last fetch of a stream sets the expectation its pending action is saved with.
  const entry = UnitOfWork.pendingFor(ctx.uow, aggregate, tenant, id, "fetched", loaded.version)
  if (options?.alwaysEnforceConsistency) entry.enforce = true
  UnitOfWork.fetched(ctx.uow, aggregate, tenant, id, { state: loaded.state, version: loaded.version, saved: false })
  return Effect.succeed({
    id,
    aggregate: loaded.state,
    version: loaded.version,
    appendOne: (event) => appendTo(ctx, entry, aggregate, [event]),
    appendMany: (events) => appendTo(ctx, entry, aggregate, events),
    alwaysEnforceConsistency: (on = true) => Effect.sync(() => void (entry.enforce = on))
  })
}

const fetchAttributes = (aggregate: Aggregate.Any, id: string, expected?: unknown): Tracing.Attributes =>
  expected === undefined
    ? { "chronicle.stream_id": id, "chronicle.aggregate": aggregate.name }
    : { "chronicle.stream_id": id, "chronicle.aggregate": aggregate.name, "chronicle.expected_version": expected }
const versionOf = (stream: { readonly version: number }): Tracing.Attributes => ({ "chronicle.version": stream.version })

// The operations below are typed with their widest error channels; the
// session's face narrows them by the options given (see `unsafeMake`).
const fetchForWriting = (ctx: Context) =>
<S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: Session.FetchOptions
): Effect.Effect<Session.EventStream<S, E>, Session.FetchError> =>
  Tracing.spanned(
    "chronicle.fetchForWriting",
    () => fetchAttributes(aggregate, id, options?.expectedVersion),
    versionOf,
    (fiber): Effect.Effect<Session.EventStream<any, any>, Session.FetchError> => {
      const invalid = invalidInput(id, options?.expectedVersion)
      if (invalid !== undefined) return Effect.fail(invalid)
      const tenant = fiber.getFiberRef(currentTenant)
      return Tracing.timedIn(
        fiber,
        Effect.flatMap(ctx.loadLatest(aggregate, tenant, id), (loaded) => streamFor(ctx, aggregate, tenant, id, loaded, options)),
        "fetch",
        aggregate.name
      )
    }
  )

const fetchForExclusiveWriting = (ctx: Context) =>
<S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  options?: Session.ExclusiveFetchOptions
) =>
  Tracing.spanned(
    "chronicle.fetchForExclusiveWriting",
    () => fetchAttributes(aggregate, id, options?.expectedVersion),
    versionOf,
    (fiber): Effect.Effect<Session.EventStream<any, any>, Session.ExclusiveFetchErrorOf<{ readonly expectedVersion: number; readonly timeout: Duration.DurationInput }>> => {
      const locked = (): Effect.Effect<Session.EventStream<any, any>, Session.ExclusiveFetchErrorOf<{ readonly expectedVersion: number; readonly timeout: Duration.DurationInput }>> => {
        const invalid = invalidInput(id, options?.expectedVersion)
        if (invalid !== undefined) return Effect.fail(invalid)
        let timeout = ctx.store.defaultLockTimeout
        if (options?.timeout !== undefined) {
          const given = lockTimeout("timeout", options.timeout)
          if (Either.isLeft(given)) return Effect.fail(given.left)
          timeout = given.right
        }
        const tenant = fiber.getFiberRef(currentTenant)
        // The read is made once the lock is had: only then is it the transaction's (`ctx.ops()`).
        return Effect.flatMap(
          onWaitClock(ctx.store, Exclusive.lock(ctx.exclusive, ctx.storage, aggregate.name, id, tenant, timeout)),
          () => Effect.flatMap(ctx.loadLatest(aggregate, tenant, id), (loaded) => streamFor(ctx, aggregate, tenant, id, loaded, options))
        )
      }
      return Effect.tapError(
        Tracing.timedIn(fiber, locked(), "fetch", aggregate.name),
        // A lock not had in time is a save that could not happen: counted with the saves.
        (error) => error._tag === "StreamLockedError" ? Metric.increment(Tracing.savesWith("locked")) : Effect.void
      )
    }
  )

const aggregateStream = (ctx: Context): Session.SessionShape["aggregateStream"] => (aggregate, id, options) =>
  Tracing.span(Effect.zipRight(
    StreamId.validate(id),
    Effect.map(
      Effect.flatMap(FiberRef.get(currentTenant), (tenant) => ctx.load(aggregate, tenant, id, { toVersion: options?.version, toTimestamp: options?.timestamp })),
      (loaded) => loaded.state
    )
  ), "chronicle.aggregateStream", fetchAttributes(aggregate, id))

const fetchLatest = (ctx: Context): Session.SessionShape["fetchLatest"] => (aggregate, id) =>
  Tracing.spanned("chronicle.fetchLatest", () => fetchAttributes(aggregate, id), undefined, (fiber): Effect.Effect<Option.Option<any>, EventStoreError | EventDecodeError | InvalidStreamIdError> => {
    const tenant = fiber.getFiberRef(currentTenant)
    const known = UnitOfWork.knownOf(ctx.uow, aggregate, tenant, id)
    // After our own save the identity map holds the newest state we can know of.
    if (known !== undefined && known.saved) return Tracing.timedIn(fiber, Effect.succeed(known.state), "fetch", aggregate.name)
    const invalid = StreamId.invalidReason(id)
    if (invalid !== undefined) return Effect.fail(new InvalidStreamIdError({ streamId: id, reason: invalid }))
    return Tracing.timedIn(fiber, Effect.map(ctx.loadLatest(aggregate, tenant, id), (loaded) => loaded.state), "fetch", aggregate.name)
  })

const loadDocument = (ctx: Context): Session.SessionShape["loadDocument"] => (projection, key) =>
  Effect.gen(function*() {
    const codec = projection._tag === "Snapshot" ? Aggregate.stateCodec(projection.aggregate) : projection.stateCodec
    if (codec === undefined) return Option.none()
    const tenantId = yield* FiberRef.get(currentTenant)
    const docs = yield* ctx.ops().readDocuments([{ projection: projection.name, projectionVersion: projection.version, tenantId, id: key }])
    if (docs.length === 0) return Option.none()
    const decoded = codec.decode(docs[0].data)
    if (Either.isLeft(decoded)) {
      return yield* new EventStoreError({
        message: `Document "${key}" of projection ${projection.name} v${projection.version} cannot be decoded: ${decoded.left}`
      })
    }
    return Option.some(decoded.right)
  })

const readRows = (ctx: Context, id: string, options: Session.ReadStreamOptions | undefined) =>
  Effect.zipRight(
    StreamId.validate(id),
    Effect.flatMap(FiberRef.get(currentTenant), (tenant) =>
      ctx.ops().readStream(tenant, id, {
        fromVersion: options?.fromVersion,
        toVersion: options?.toVersion,
        toTimestamp: options?.timestamp
      }))
  )

// Anything but an aggregate is taken for an id, so that a bad one fails as InvalidStreamIdError.
const isAggregate = (value: unknown): value is Aggregate.Any =>
  typeof value === "object" && value !== null && "codec" in value && "evolve" in value

const readStream = (ctx: Context): Session.SessionShape["readStream"] =>
  ((first: unknown, second?: unknown, third?: Session.ReadStreamOptions) =>
    isAggregate(first)
      ? Tracing.span(
        Effect.flatMap(readRows(ctx, second as string, third), (rows) => Envelope.decodeAll(first, rows)),
        "chronicle.readStream",
        fetchAttributes(first, second as string),
        (events) => ({ "chronicle.events": events.length })
      )
      : Tracing.span(
        Effect.map(readRows(ctx, first as string, second as Session.ReadStreamOptions | undefined), (rows) =>
          rows.map((row) => Envelope.ofStored<unknown>(row, row.data))),
        "chronicle.readStream",
        { "chronicle.stream_id": first },
        (events) => ({ "chronicle.events": events.length })
      )) as Session.SessionShape["readStream"]

const startStream = (ctx: Context): Session.SessionShape["startStream"] => (aggregate, id, events) =>
  Effect.flatMap(
    Effect.zipRight(StreamId.validate(id), FiberRef.get(currentTenant)),
    (tenant) => appendTo(ctx, UnitOfWork.pendingFor(ctx.uow, aggregate, tenant, id, "start", 0), aggregate, events)
  )

const append = (ctx: Context) =>
<S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  events: Iterable<E>,
  options?: Session.AppendOptions
) =>
  Effect.withFiberRuntime((fiber): Effect.Effect<void, InvalidStreamIdError | InvalidExpectedVersionError> => {
    const invalid = invalidInput(id, options?.expectedVersion)
    if (invalid !== undefined) return Effect.fail(invalid)
    const tenant = fiber.getFiberRef(currentTenant)
    const existing = UnitOfWork.pendingOf(ctx.uow, tenant, id)
    const entry = existing === undefined
      ? UnitOfWork.pendingFor(ctx.uow, aggregate, tenant, id, "append", options?.expectedVersion ?? "any")
      : existing
    if (existing !== undefined && options?.expectedVersion !== undefined) {
      entry.expected = options.expectedVersion
    }
    UnitOfWork.push(ctx.uow, entry, aggregate, events, fiber.getFiberRef(currentMetadata))
    return Effect.void
  })

// The tag of a save's duration: its streams' aggregates.
const aggregatesOf = (saving: ReadonlyMap<string, UnitOfWork.Pending>): string => {
  if (saving.size === 0) return "*none*"
  if (saving.size === 1) return saving.values().next().value!.aggregate.name
  return Array.from(new Set(Array.from(saving.values(), (entry) => entry.aggregate.name))).sort().join(",")
}

const archiveStream = (ctx: Context): Session.SessionShape["archiveStream"] => (id) =>
  Effect.zipRight(
    StreamId.validate(id),
    Effect.withFiberRuntime<void>((fiber) => {
      UnitOfWork.archive(ctx.uow, fiber.getFiberRef(currentTenant), id)
      return Effect.void
    })
  )

// A save ends the unit of work, whatever its outcome: pending appends are
// dropped (a retry fetches again), and the transaction of an exclusive fetch
// ends, giving back its locks and its connection.
const saveChanges = (ctx: Context): Effect.Effect<Session.SaveResult, Session.SaveError> =>
  Effect.withFiberRuntime((fiber) => {
    const { archiving, saving, tenantId, tenants } = UnitOfWork.take(ctx.uow, fiber.getFiberRef(currentTenant))
    // A commit is one tenant's (the port's batch carries one tenant): pending work
    // of several tenants in one session is refused whole, so nothing is written.
    const effect: Effect.Effect<Session.SaveResult, Session.SaveError> = tenants.size > 1
      ? Effect.fail(
        new EventStoreError({
          message: `A session saves the streams of one tenant at a time; this one has pending changes in tenants ${
            Array.from(tenants).map((t) => JSON.stringify(t)).join(", ")
          }`
        })
      )
      : Save.save(ctx, ctx.exclusive.transaction, saving, tenantId, archiving, fiber.getFiberRef(FiberRef.currentMetricLabels))
    const ended = ctx.exclusive.scope === undefined ? effect : Effect.ensuring(effect, Exclusive.end(ctx.exclusive))
    if (!Tracing.records(fiber.currentTracer)) return Tracing.timedIn(fiber, ended, "save", aggregatesOf(saving))
    return Tracing.span(Tracing.timedIn(fiber, ended, "save", aggregatesOf(saving)), "chronicle.saveChanges", { "chronicle.streams": saving.size }, (result) => ({
      "chronicle.events": result.streams.reduce((n, s) => n + s.sequences.length, 0),
      "chronicle.stream_id": result.streams.map((s) => s.streamId).join(",")
    }))
  })

// The identity map of each live session, for the command workflow's result,
// kept off the public `SessionShape`: under a symbol of this module, which
// costs a session nothing where a WeakMap entry costs the collector an ephemeron.
const unitOfWorkKey: unique symbol = Symbol.for("effect-chronicle/Session/unitOfWork")
type WithUnitOfWork = Session.SessionShape & { readonly [unitOfWorkKey]?: UnitOfWork.UnitOfWork }

/** @internal what this session knows of a stream's state, as of its last fetch or save. */
export const known = (
  session: Session.SessionShape,
  aggregate: Aggregate.Any,
  id: string,
  tenantId: string
): Option.Option<UnitOfWork.Known<any>> => {
  const uow = (session as WithUnitOfWork)[unitOfWorkKey]
  return Option.fromNullable(uow === undefined ? undefined : UnitOfWork.knownOf(uow, aggregate, tenantId, id))
}

/** @internal a session over `store`, and what ends it (its locks given back, anything unsaved rolled back). */
export const unsafeMake = (store: EventStoreShape): {
  readonly session: Session.SessionShape
  readonly close: Effect.Effect<void>
  /** `close` when there is something to end (an exclusive fetch's transaction), else undefined. */
  readonly closeIfOpen: () => Effect.Effect<void> | undefined
} => {
  const uow = UnitOfWork.make()
  const exclusive = Exclusive.make()
  const ops = (): Storage.Operations => exclusive.transaction ?? store.storage
  const { load, loadLatest } = Rehydrate.make({ storage: store.storage, ops, registry: store.projections, liveStates: store.liveStates })
  const knownAt: Inline.KnownAt = (entry, version) => UnitOfWork.knownAt(uow, entry as UnitOfWork.Pending, version)
  const ctx: Context = { store, storage: store.storage, registry: store.projections, uow, knownAt, exclusive, ops, load, loadLatest }
  const session: WithUnitOfWork = {
    [unitOfWorkKey]: uow,
    // Narrowed by the options: what they rule out cannot happen at run time.
    fetchForWriting: fetchForWriting(ctx) as Session.SessionShape["fetchForWriting"],
    fetchForExclusiveWriting: fetchForExclusiveWriting(ctx) as Session.SessionShape["fetchForExclusiveWriting"],
    fetchLatest: fetchLatest(ctx),
    aggregateStream: aggregateStream(ctx),
    readStream: readStream(ctx),
    startStream: startStream(ctx),
    append: append(ctx) as Session.SessionShape["append"],
    archiveStream: archiveStream(ctx),
    saveChanges: saveChanges(ctx),
    loadDocument: loadDocument(ctx)
  }
  const close = Exclusive.end(exclusive)
  return { session, close, closeIfOpen: () => exclusive.scope === undefined && exclusive.transaction === undefined ? undefined : close }
}
