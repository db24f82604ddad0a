/**
 * The transaction that holds a session's exclusive locks, from its first
 * exclusive fetch until the save (or the end of the session's scope). Only
 * exclusive fetches need one, so a session without them costs no scope at all.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { DeadlockError, type EventStoreError, StreamLockedError } from "../Errors.js"
import type * as Storage from "../Storage.js"
import * as Fiber from "./fiber.js"

/** @internal a session's exclusive transaction, if one is open or being opened. */
export interface Exclusive {
  /** The open transaction. */
  transaction: Storage.Transaction | undefined
  /** The scope of the transaction being opened or open: set before it begins, so an interrupted begin is closed too. */
  scope: Scope.CloseableScope | undefined
}

/** @internal no transaction yet. */
export const make = (): Exclusive => ({ transaction: undefined, scope: undefined })

/** @internal ends the transaction, if any, giving back its locks and its connection. */
export const end = (exclusive: Exclusive): Effect.Effect<void> =>
  Effect.suspend(() => {
    const scope = exclusive.scope
    exclusive.scope = undefined
    exclusive.transaction = undefined
    return scope === undefined ? Effect.void : Scope.close(scope, Exit.void)
  })

const begin = (exclusive: Exclusive, storage: Storage.Storage): Effect.Effect<Storage.Transaction, EventStoreError> =>
  Effect.suspend(() => {
    if (exclusive.transaction !== undefined) return Effect.succeed(exclusive.transaction)
    // A scope of its own, so that the save can end it before the session does.
    return Effect.flatMap(Scope.make(ExecutionStrategy.sequential), (scope) => {
      exclusive.scope = scope
      return Effect.tap(Fiber.provideService(storage.begin, Scope.Scope, scope), (transaction) => {
        exclusive.transaction = transaction
      })
    })
  })

/** @internal locks a stream in the session's transaction, opening it first if needed. */
export const lock = (
  exclusive: Exclusive,
  storage: Storage.Storage,
  aggregateType: string,
  id: string,
  tenantId: string,
  timeout: Duration.Duration
): Effect.Effect<void, StreamLockedError | DeadlockError | EventStoreError> =>
  Effect.flatMap(begin(exclusive, storage), (transaction) =>
    Effect.flatMap(transaction.lock(id, aggregateType, tenantId, timeout), (locked): Effect.Effect<void, StreamLockedError | DeadlockError> =>
      locked === "TimedOut"
        ? Effect.fail(new StreamLockedError({ streamId: id, timeoutMillis: Duration.toMillis(timeout) }))
        : locked === "Deadlocked"
        ? Effect.fail(new DeadlockError({ streamIds: [id] }))
        : Effect.void))

