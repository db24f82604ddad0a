/**
 * The in-memory storage: the same semantics as PostgreSQL (versions, conflicts
 * reported with the actual version, gap-free sequences, stream locks that block
 * other writers and time out) built on Effect's own primitives.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Storage from "../Storage.js"
import * as Locks from "./locks.js"
import * as Log from "./log.js"
import * as State from "./state.js"
import * as Streams from "./streams.js"
import * as Transactions from "./transactions.js"

/**
 * Creates an empty in-memory store.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Storage.Storage> = Effect.sync(() => {
  const state = State.make()
  const reads = Streams.reads(state)
  return {
    ...reads,
    commit: (batch) => Transactions.commitAs(state, Locks.owner(), batch),
    begin: Transactions.begin(state, reads),
    // The in-memory store has no transactions a caller could open.
    joined: Effect.succeed(false),
    projections: Log.make(state),
    listStreams: (tenantId, query) => Streams.listStreams(state, tenantId, query)
  }
})
