/**
 * The daemon's half of the storage port: the log in commit order, gap-safe,
 * positions (checkpoints), leadership of a projection or subscription, its
 * stored progress, documents and dead letters. `Storage.ts` holds the other
 * half (streams, commits, transactions) and re-exports these names.
 *
 * @since 0.2.0
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { EventStoreError } from "./Errors.js"
import type { DocumentRef, DocumentWrite, StoredDocument, StoredEvent } from "./Storage.js"

/**
 * A position in the log in commit order: the writing transaction, then the
 * sequence. Readers that checkpoint on it never skip an event whose
 * transaction committed after a later one.
 *
 * @since 0.1.0
 */
export interface Checkpoint {
  readonly txId: bigint
  readonly sequence: number
}

/**
 * The position before the first event.
 *
 * @since 0.1.0
 */
export const origin: Checkpoint = { txId: 0n, sequence: 0 }

/**
 * Whether `a` is after `b` in commit order.
 *
 * @since 0.1.0
 */
export const isAfter = (a: Checkpoint, b: Checkpoint): boolean =>
  a.txId > b.txId || (a.txId === b.txId && a.sequence > b.sequence)

/**
 * A stored event as the projection daemon reads it.
 *
 * @since 0.1.0
 */
export interface LoggedEvent extends StoredEvent {
  readonly streamType: string
  readonly txId: bigint
  /** Whether its stream is archived (as of the read): projections pass over such events. */
  readonly archived?: boolean | undefined
}

/**
 * Which events of the log a reader takes. Every field left out takes all.
 *
 * @since 0.2.0
 */
export interface LogFilter {
  /** Only this tenant's events; every tenant's when undefined. */
  readonly tenantId?: string | undefined
  /** Only events of these types. */
  readonly types?: ReadonlyArray<string> | undefined
  /** Only events of streams of these types (aggregate names). */
  readonly streamTypes?: ReadonlyArray<string> | undefined
  /** Also the events of archived streams (left out by default). */
  readonly includeArchived?: boolean | undefined
}

/**
 * A page of the log: the events that passed the filter, the position of the
 * last event looked at (`after` itself when none), and how many were looked at
 * (fewer than asked: the reader is at the head, or at the gap-safe horizon).
 *
 * @since 0.2.0
 */
export interface LogPage {
  readonly events: ReadonlyArray<LoggedEvent>
  readonly end: Checkpoint
  readonly scanned: number
}

/**
 * One version of one projection.
 *
 * @since 0.1.0
 */
export interface ProjectionRef {
  readonly name: string
  /** The projection's version (1 and up); 0 names a subscription, whose position is kept the same way. */
  readonly version: number
}

/**
 * A projection's stored progress.
 *
 * @since 0.1.0
 */
export interface Progress {
  readonly checkpoint: Checkpoint
  /** Events processed since the projection (re)started from the origin. */
  readonly processed: number
  /** Why a subscription stopped (`onFailure: "stop"`): it delivers nothing until reset. */
  readonly error?: string | undefined
}

/**
 * An event a subscription gave up on, with the error of its last try.
 *
 * @since 0.2.0
 */
export interface DeadLetter {
  readonly event: LoggedEvent
  readonly error: string
  readonly at: Date
}

/**
 * What the leader of one projection may do. Obtained by `claim`, which makes
 * sure one worker at a time (across processes) runs a projection.
 *
 * @since 0.1.0
 */
export interface ProjectionWorker {
  /**
   * Up to `limit` events after the checkpoint, in commit order, that no
   * transaction still running can precede (gap-safe).
   */
  readonly readAfter: (after: Checkpoint, limit: number) => Effect.Effect<ReadonlyArray<LoggedEvent>, EventStoreError>
  readonly readDocuments: (refs: ReadonlyArray<DocumentRef>) => Effect.Effect<ReadonlyArray<StoredDocument>, EventStoreError>
  readonly progress: Effect.Effect<Progress, EventStoreError>
  /** Writes the documents (and dead letters) and moves the checkpoint, atomically. */
  readonly store: (
    writes: ReadonlyArray<DocumentWrite>,
    progress: Progress,
    deadLetters?: ReadonlyArray<DeadLetter>
  ) => Effect.Effect<void, EventStoreError>
  /** Whether someone waits in `takeOver` for this leadership: the leader should give it up soon. */
  readonly asked: Effect.Effect<boolean, EventStoreError>
  /** Deletes the projection's documents and progress, atomically (a rebuild starts from here). */
  readonly reset: Effect.Effect<void, EventStoreError>
}

/**
 * The projection daemon's view of a store.
 *
 * @since 0.1.0
 */
export interface ProjectionStorage {
  /**
   * Waits until this process leads the projection (never while a `takeOver` of
   * it waits); the scope's end gives it up.
   */
  readonly claim: (ref: ProjectionRef) => Effect.Effect<ProjectionWorker, EventStoreError, Scope.Scope>
  /**
   * Takes the leadership from whoever has it: asks the leader to give it up
   * (its worker's `asked`), waits until it has, and holds it until the scope
   * ends. Rebuilds and resets go through here.
   */
  readonly takeOver: (ref: ProjectionRef) => Effect.Effect<ProjectionWorker, EventStoreError, Scope.Scope>
  /** A subscription's dead letters, oldest first. */
  readonly deadLetters: (ref: ProjectionRef) => Effect.Effect<ReadonlyArray<DeadLetter>, EventStoreError>
  readonly progress: (ref: ProjectionRef) => Effect.Effect<Progress, EventStoreError>
  /** The position of the last committed event (the origin for an empty log). */
  readonly head: Effect.Effect<{ readonly checkpoint: Checkpoint; readonly sequence: number }, EventStoreError>
  /**
   * The next `limit` events of the log after `after`, in commit order,
   * gap-safe like a worker's `readAfter`, of which those that pass `filter`;
   * needs no leadership. A page says how far it looked, so that a reader
   * moves past the events its filter leaves out without reading them again.
   */
  readonly readLog: (after: Checkpoint, limit: number, filter: LogFilter) => Effect.Effect<LogPage, EventStoreError>
  /**
   * Whether every transaction that could write at or before `checkpoint` has
   * ended, so that a read now sees all of the log up to it.
   */
  readonly settled: (checkpoint: Checkpoint) => Effect.Effect<boolean, EventStoreError>
  /** How many committed events lie after a position. */
  readonly countAfter: (after: Checkpoint) => Effect.Effect<number, EventStoreError>
  /** Ticks after commits that appended events (best effort: readers also poll). */
  readonly changes: Stream.Stream<void>
}
