/**
 * The unit of work's two maps: the pending appends of each stream, and the
 * identity map of the states this session fetched or saved. A stream's
 * identity is (tenant, id): two tenants' streams of one id never share an entry.
 *
 * @since 0.1.0
 */
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import type { EventMetadata } from "../EventEnvelope.js"
import type * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"
import * as Inline from "./inline.js"

/** @internal the identity-map entry of a stream: its state and version as the session last knew them. */
export interface Known<S> {
  readonly state: Option.Option<S>
  readonly version: number
  /** True when the state is the outcome of this session's own save. */
  readonly saved: boolean
}

/** @internal one appended event, with what encodes it. */
export interface PendingEvent {
  /** The aggregate whose Schema encodes it (another one may share the stream id). */
  readonly aggregate: Aggregate.Any
  readonly event: unknown
  readonly metadata: EventMetadata
}

/** @internal one stream's pending action. */
export interface Pending {
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

/** @internal the pending appends and the identity map of one session. */
export interface UnitOfWork {
  readonly pending: Map<string, Pending>
  readonly identity: Map<string, Known<any>>
  /** The streams to archive at the save (`archiveStream`), by stream key. */
  readonly archives: Map<string, Archive>
}

/** @internal a stream to archive: its identity, (tenant, id). */
export interface Archive {
  readonly tenantId: string
  readonly streamId: string
}

/** @internal an empty unit of work. */
export const make = (): UnitOfWork => ({ pending: new Map(), identity: new Map(), archives: new Map() })

const streamKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`
const identityKey = (aggregate: Aggregate.Any, tenantId: string, id: string) => `${aggregate.name}\u0000${tenantId}\u0000${id}`

/** @internal marks the tenant's stream for archiving at the save (twice is once). */
export const archive = (uow: UnitOfWork, tenantId: string, streamId: string): void => {
  uow.archives.set(streamKey(tenantId, streamId), { tenantId, streamId })
}

/** @internal the pending action of a stream, if it has one. */
export const pendingOf = (uow: UnitOfWork, tenantId: string, id: string): Pending | undefined =>
  uow.pending.get(streamKey(tenantId, id))

/** @internal the stream's pending action, made or re-aimed at `mode` and `expected`. */
export const pendingFor = (
  uow: UnitOfWork,
  aggregate: Aggregate.Any,
  tenantId: string,
  id: string,
  mode: Pending["mode"],
  expected: Storage.Expected
): Pending => {
  let entry = uow.pending.get(streamKey(tenantId, id))
  if (entry === undefined) {
    entry = { aggregate, tenantId, streamId: id, mode, expected, enforce: false, events: [] }
    uow.pending.set(streamKey(tenantId, id), entry)
  } else {
    entry.mode = mode
    entry.expected = expected
  }
  return entry
}

/** @internal appends events to a stream's pending action (a fresh one if that was saved meanwhile). */
export const push = (
  uow: UnitOfWork,
  entry: Pending,
  aggregate: Aggregate.Any,
  events: Iterable<unknown>,
  metadata: EventMetadata
): void => {
  let target = entry
  const key = streamKey(entry.tenantId, entry.streamId)
  if (uow.pending.get(key) !== entry) {
    // A stream used again after its save: the next save expects the version this session saved.
    const known = uow.identity.get(identityKey(entry.aggregate, entry.tenantId, entry.streamId))
    const expected = known !== undefined && known.saved ? known.version : entry.expected
    target = uow.pending.get(key) ?? pendingFor(uow, entry.aggregate, entry.tenantId, entry.streamId, entry.mode, expected)
  }
  for (const event of events) target.events.push({ aggregate, event, metadata })
}

/** @internal what the session knows of a stream as an aggregate, if anything. */
export const knownOf = (uow: UnitOfWork, aggregate: Aggregate.Any, tenantId: string, id: string): Known<any> | undefined =>
  uow.identity.get(identityKey(aggregate, tenantId, id))

/** @internal records what a fetch saw. */
export const fetched = (uow: UnitOfWork, aggregate: Aggregate.Any, tenantId: string, id: string, known: Known<any>): void => {
  uow.identity.set(identityKey(aggregate, tenantId, id), known)
}

/**
 * @internal the state the session knows a stream had at `version`: Some(None)
 * for a stream with no events, None when the session does not know.
 */
export const knownAt = (uow: UnitOfWork, entry: Pending, version: Storage.Expected): Option.Option<Option.Option<unknown>> => {
  if (version === 0) return Option.some(Option.none())
  const known = uow.identity.get(identityKey(entry.aggregate, entry.tenantId, entry.streamId))
  return known !== undefined && known.version === version ? Option.some(known.state) : Option.none()
}

/**
 * @internal records a saved stream's new state: the one computed for an Inline
 * snapshot if there was one, else the saved events folded onto the state the
 * session already had at the previous version (no read needed); forgotten when
 * the session had none.
 */
export const remember = (
  uow: UnitOfWork,
  entry: Pending,
  committed: Storage.CommittedStream,
  tenantId: string,
  computed: Option.Option<unknown> | undefined
): void => {
  const key = identityKey(entry.aggregate, entry.tenantId, entry.streamId)
  if (computed !== undefined) {
    uow.identity.set(key, { state: computed, version: committed.version, saved: true })
    return
  }
  const baseline = knownAt(uow, entry, committed.previousVersion)
  if (Option.isNone(baseline)) {
    uow.identity.delete(key)
    return
  }
  uow.identity.set(key, {
    state: Envelope.readsEnvelopes(entry.aggregate)
      ? Aggregate.foldFrom(entry.aggregate, baseline.value, Inline.envelopesOf(entry, committed, tenantId))
      : foldSaved(entry, baseline.value, committed.events.length),
    version: committed.version,
    saved: true
  })
}

// The saved events folded as they were appended, for an evolve that reads no envelope (as a fetch folds them).
const foldSaved = (entry: Pending, from: Option.Option<unknown>, count: number): Option.Option<unknown> => {
  if (count === 0) return from
  const evolve = entry.aggregate.evolve as (state: unknown, event: unknown) => unknown
  let state = Option.isSome(from) ? from.value : entry.aggregate.initial
  for (let i = 0; i < count; i++) state = evolve(state, entry.events[i].event)
  return Option.some(state)
}

/** @internal what a save takes: the pending actions of one tenant, and every tenant with work pending. */
export interface Taken {
  readonly tenantId: string
  readonly saving: ReadonlyMap<string, Pending>
  /** The ids of the tenant's streams to archive. */
  readonly archiving: ReadonlyArray<string>
  readonly tenants: ReadonlySet<string>
}

/**
 * @internal empties the pending actions for a save. A save ends the unit of
 * work whatever its outcome, so a retry fetches again.
 */
export const take = (uow: UnitOfWork, currentTenant: string): Taken => {
  const all = Array.from(uow.pending.values())
  const archives = Array.from(uow.archives.values())
  uow.pending.clear()
  uow.archives.clear()
  const working = all.filter(hasWork)
  const tenants = new Set([...working, ...archives].map((entry) => entry.tenantId))
  const tenantId = working.length > 0 ? working[0].tenantId : archives.length > 0 ? archives[0].tenantId : currentTenant
  const saving = new Map(all.filter((entry) => entry.tenantId === tenantId).map((entry) => [entry.streamId, entry]))
  const archiving = archives.filter((entry) => entry.tenantId === tenantId).map((entry) => entry.streamId)
  return { tenantId, saving, archiving, tenants }
}

/** @internal whether a pending action writes or asserts anything. */
export const hasWork = (entry: Pending): boolean => entry.events.length > 0 || entry.enforce
