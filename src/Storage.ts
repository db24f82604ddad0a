/**
 * The storage port: what a store must do, in encoded terms (rows and JSON),
 * and nothing more. Every rule above it (decoding, folding, expected versions,
 * the identity map, retries) lives once in the engine; `pg/` and `memory/`
 * implement this interface.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type { Either } from "effect/Either"
import type { Option } from "effect/Option"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { EventStoreError } from "./Errors.js"
import type { ProjectionStorage } from "./ProjectionStorage.js"

/**
 * An event as stored: payload and metadata are encoded JSON.
 *
 * @since 0.1.0
 */
export interface StoredEvent {
  readonly streamId: string
  readonly version: number
  readonly sequence: number
  readonly type: string
  readonly data: unknown
  readonly metadata: StoredMetadata
  readonly timestamp: Date
  readonly tenantId: string
}

/**
 * A stream's events as a read gives them, and whether the stream is archived
 * (the read tells, in the same round trip, so that a fetch for writing needs
 * no second one to refuse an archived stream).
 *
 * @since 0.2.0
 */
export type StreamEvents = ReadonlyArray<StoredEvent> & { readonly archived?: boolean | undefined }

/**
 * Encoded event metadata.
 *
 * @since 0.1.0
 */
export interface StoredMetadata {
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly headers?: Readonly<Record<string, unknown>> | undefined
}

/**
 * An encoded event to append.
 *
 * @since 0.1.0
 */
export interface NewEvent {
  readonly type: string
  readonly data: unknown
  readonly metadata: StoredMetadata
}

/**
 * What a commit expects of a stream's version: an exact version (0 meaning
 * "no stream yet") or `"any"`, which serialises on the stream and never conflicts.
 *
 * @since 0.1.0
 */
export type Expected = number | "any"

/**
 * One stream's part of a commit. With no events it is a pure version
 * assertion (`alwaysEnforceConsistency`).
 *
 * @since 0.1.0
 */
export interface StreamWrite {
  readonly streamId: string
  /** The aggregate type, stored as the stream type (and on each event, for projections). */
  readonly aggregateType: string
  readonly expected: Expected
  readonly events: ReadonlyArray<NewEvent>
}

/**
 * Names one stored document: a snapshot (keyed by stream id) or a multi-stream
 * view (keyed by its own key), of one version of one projection, in one
 * tenant (documents of two tenants never share a key).
 *
 * @since 0.1.0
 */
export interface DocumentRef {
  readonly projection: string
  readonly projectionVersion: number
  readonly tenantId: string
  readonly id: string
}

/**
 * A stored document: encoded state, and for snapshots the stream version it reflects.
 *
 * @since 0.1.0
 */
export interface StoredDocument extends DocumentRef {
  readonly data: unknown
  readonly streamVersion: number | null
}

/**
 * A document to upsert.
 *
 * @since 0.1.0
 */
export interface DocumentWrite extends DocumentRef {
  readonly data: unknown
  readonly streamVersion: number | null
}

/**
 * Inline projection work that needs the positions the store gives the new
 * events, or documents other writers may change: run after the events are
 * inserted, in the same transaction, synchronously (so the in-memory store can
 * do everything in one atomic step). Its data flow is explicit: the committed
 * positions in, the documents to read (and lock) out; those documents in, the
 * writes out.
 *
 * @since 0.1.0
 */
export interface InlineWork {
  readonly prepare: (committed: ReadonlyArray<CommittedStream>) => Either<InlineStep, EventStoreError>
}

/**
 * The second half of inline work: what it reads, and what it makes of it.
 *
 * @since 0.1.0
 */
export interface InlineStep {
  /** The documents `compute` needs, read (and locked) before it runs. */
  readonly documents: ReadonlyArray<DocumentRef>
  /** The documents to write, and the new states of the streams; a failure rolls the whole save back. */
  readonly compute: (existing: ReadonlyArray<StoredDocument>) => Either<InlineOutcome, EventStoreError>
}

/**
 * What inline work gave: its writes, and the states it computed per stream id
 * (handed back in the commit result, for the session's identity map).
 *
 * @since 0.1.0
 */
export interface InlineOutcome {
  readonly writes: ReadonlyArray<DocumentWrite>
  readonly states: ReadonlyMap<string, Option<unknown>>
}

/**
 * Everything one save writes, atomically. Its streams are all of `tenantId`:
 * a stream's identity is the pair (tenant, id).
 *
 * @since 0.1.0
 */
export interface CommitBatch {
  readonly tenantId: string
  readonly streams: ReadonlyArray<StreamWrite>
  /** Documents known before the insert (Inline snapshots): written by the same statement. */
  readonly documents?: ReadonlyArray<DocumentWrite> | undefined
  readonly inline?: InlineWork | undefined
  /**
   * Streams to archive, after the events are in, in the same transaction
   * (`Session.archiveStream`). A stream with no events is left alone; one
   * already archived stays so.
   */
  readonly archive?: ReadonlyArray<string> | undefined
}

/**
 * The position the store gave each appended event.
 *
 * @since 0.1.0
 */
export interface AppendedEvent {
  readonly version: number
  readonly sequence: number
  readonly timestamp: Date
}

/**
 * One stream's outcome of a successful commit.
 *
 * @since 0.1.0
 */
export interface CommittedStream {
  readonly streamId: string
  readonly previousVersion: number
  readonly version: number
  readonly events: ReadonlyArray<AppendedEvent>
}

/**
 * A stream whose expectation failed, with the version actually found.
 *
 * @since 0.1.0
 */
export interface Conflict {
  readonly streamId: string
  readonly expected: number
  readonly actual: number
  /** The stream is archived: nothing may be appended to it, whatever the expectation. */
  readonly archived?: boolean | undefined
}

/**
 * A commit either wrote everything or nothing; conflicts are data so that the
 * engine, not each store, decides which typed error they become.
 *
 * @since 0.1.0
 */
export type CommitResult =
  | {
    readonly _tag: "Committed"
    readonly streams: ReadonlyArray<CommittedStream>
    /** The states the batch's inline work computed, by stream id. */
    readonly states?: ReadonlyMap<string, Option<unknown>> | undefined
  }
  | { readonly _tag: "Conflicted"; readonly conflicts: ReadonlyArray<Conflict> }
  | { readonly _tag: "Deadlocked"; readonly streamIds: ReadonlyArray<string> }

/**
 * How a lock attempt ended: had, not had within the time-out, or refused
 * because waiting would have closed a cycle of sessions waiting on each other.
 *
 * @since 0.2.0
 */
export type LockOutcome = "Locked" | "TimedOut" | "Deadlocked"

/**
 * Bounds for reading one stream.
 *
 * @since 0.1.0
 */
export interface ReadOptions {
  readonly fromVersion?: number | undefined
  readonly toVersion?: number | undefined
  readonly toTimestamp?: Date | undefined
  /**
   * The events are only folded, without envelopes: only their `streamId`,
   * `version`, `type` and `data` are needed, and a store may leave the rest
   * out of the read (the others then hold placeholders). A store may also
   * read whole events.
   */
  readonly forFold?: boolean | undefined
}

/**
 * A stored snapshot and the stream's events after the version it reflects.
 *
 * @since 0.1.0
 */
export interface SnapshotLoad {
  readonly snapshot: StoredDocument | undefined
  readonly tail: ReadonlyArray<StoredEvent>
  /** Whether the stream is archived. */
  readonly archived?: boolean | undefined
}

/**
 * Reading and committing, inside or outside a transaction.
 *
 * @since 0.1.0
 */
export interface Operations {
  /** The tenant's stream's events in version order (empty for a stream with no events). */
  readonly readStream: (tenantId: string, streamId: string, options?: ReadOptions) => Effect.Effect<StreamEvents, EventStoreError>
  /**
   * In one round trip: the stream's stored snapshot of the newest of
   * `projectionVersions` that has one, and the events after it (all events without one).
   */
  readonly loadSnapshot: (
    tenantId: string,
    streamId: string,
    projection: string,
    projectionVersions: ReadonlyArray<number>
  ) => Effect.Effect<SnapshotLoad, EventStoreError>
  /** Stored documents by reference; missing ones are left out. */
  readonly readDocuments: (refs: ReadonlyArray<DocumentRef>) => Effect.Effect<ReadonlyArray<StoredDocument>, EventStoreError>
  /** Writes the batch atomically, or nothing when any expectation fails. */
  readonly commit: (batch: CommitBatch) => Effect.Effect<CommitResult, EventStoreError>
}

/**
 * A unit of work that holds stream locks until it commits or its scope closes
 * (which rolls back anything uncommitted and releases the locks). After
 * `commit`, whatever its result, the transaction is over.
 *
 * @since 0.1.0
 */
export interface Transaction extends Operations {
  /**
   * Locks the tenant's stream, also one that does not exist yet. A lock not had
   * (in time, or for a deadlock) leaves the transaction usable, with the locks it held.
   */
  readonly lock: (
    streamId: string,
    aggregateType: string,
    tenantId: string,
    timeout: Duration.Duration
  ) => Effect.Effect<LockOutcome, EventStoreError>
}

/**
 * A stream as listed: its type, version, tenant, and the positions and times
 * of its first and last events.
 *
 * @since 0.2.0
 */
export interface StreamInfo {
  readonly streamId: string
  /** The aggregate type it was written with. */
  readonly streamType: string
  readonly version: number
  readonly tenantId: string
  /** The global sequence of its first event: streams are listed newest first by it. */
  readonly sequence: number
  /** When its first event was stored. */
  readonly createdAt: Date
  /** When its last event was stored. */
  readonly updatedAt: Date
  /** Whether it is archived (`Session.archiveStream`): still read, no longer written. */
  readonly archived: boolean
}

/**
 * Which streams of a tenant to list, newest first (by their first event).
 *
 * @since 0.2.0
 */
export interface StreamQuery {
  /** Only streams of this type (aggregate name). */
  readonly streamType?: string | undefined
  /** Only streams older than this one (whose first event came before its first event); none when it names no stream. */
  readonly after?: string | undefined
  /** Streams skipped, after `after`. */
  readonly offset: number
  /** At most this many. */
  readonly limit: number
}

/**
 * A store.
 *
 * @since 0.1.0
 */
export interface Storage extends Operations {
  /** Opens a transaction that lives until `commit` or the end of the scope. */
  readonly begin: Effect.Effect<Transaction, EventStoreError, Scope.Scope>
  /**
   * Whether statements run now would join a caller's transaction, whose
   * writes may yet roll back (so what they read must not outlive it).
   */
  readonly joined: Effect.Effect<boolean>
  /** What the projection daemon needs. */
  readonly projections: ProjectionStorage
  /** The tenant's streams that have events, newest first (by the sequence of their first event). */
  readonly listStreams: (tenantId: string, query: StreamQuery) => Effect.Effect<ReadonlyArray<StreamInfo>, EventStoreError>
}

// The daemon's half of the port lives in ProjectionStorage.ts; its names are here too, so that
// `Storage.Checkpoint` and the rest keep working.
export type {
  Checkpoint,
  DeadLetter,
  LogFilter,
  LoggedEvent,
  LogPage,
  ProjectionRef,
  ProjectionStorage,
  ProjectionWorker,
  Progress
} from "./ProjectionStorage.js"
export { isAfter, origin } from "./ProjectionStorage.js"

