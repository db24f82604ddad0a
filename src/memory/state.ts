/**
 * What the in-memory store holds, as one value its parts (streams and commits,
 * transactions, the projection log) are handed: the streams, the log in commit
 * order, the documents, the stream locks and the commit listeners.
 *
 * @internal
 */
import * as Projecting from "../internal/projecting.js"
import type * as Storage from "../Storage.js"
import * as Locks from "./locks.js"

/** @internal one stream: its type, version and events. */
export interface StreamRow {
  readonly aggregateType: string
  version: number
  readonly events: Array<LoggedEvent>
  /** Archived (`Session.archiveStream`): read, never written again. */
  archived: boolean
}

/** A stored event with what the projection daemon orders and filters by. */
export interface LoggedEvent extends Storage.StoredEvent {
  readonly streamType: string
  /** The commit that wrote it: commits are atomic here, so commit order is visibility order. */
  readonly commit: number
}

/** @internal the store's state. */
export interface State {
  // Keyed by (tenant, id): a stream's identity, as the PostgreSQL primary key.
  readonly streams: Map<string, StreamRow>
  readonly log: Array<LoggedEvent>
  /** Commits so far: the last one's number. */
  commits: number
  readonly documents: Map<string, Storage.StoredDocument>
  // Wakes projection daemons waiting for new events.
  readonly listeners: Set<() => void>
  // One lock per stream, keyed by streamKey (one tenant's lock never blocks
  // another's), stands in for PostgreSQL's row lock on the stream.
  readonly locks: ReturnType<typeof Locks.make>
}

/** @internal an empty store. */
export const make = (): State => ({
  streams: new Map(),
  log: [],
  commits: 0,
  documents: new Map(),
  listeners: new Set(),
  locks: Locks.make()
})

/** @internal the key of the tenant's stream. */
export const streamKey = (tenantId: string, id: string) => `${tenantId}\u0000${id}`

/** @internal the key of a document: the same one Inline saves and the daemon key documents by. */
export const docKey: (ref: Storage.DocumentRef) => string = Projecting.documentKey

/** @internal wakes every listener after a commit that appended events. */
export const notify = (state: State) => state.listeners.forEach((listener) => listener())
