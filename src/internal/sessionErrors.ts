/**
 * The error channels of the session's operations, narrowed by their options
 * (re-exported by `Session`).
 *
 * @since 0.2.0
 */
import type {
  ConcurrencyError,
  DeadlockError,
  EventDecodeError,
  EventEncodeError,
  EventStoreError,
  InvalidExpectedVersionError,
  InvalidOptionError,
  InvalidStreamIdError,
  StreamArchivedError,
  StreamExistsError,
  StreamLockedError
} from "../Errors.js"
import type { Sets } from "./input.js"

/**
 * Errors a fetch can fail with.
 *
 * @since 0.1.0
 */
export type FetchError =
  | ConcurrencyError
  | StreamArchivedError
  | EventStoreError
  | EventDecodeError
  | InvalidStreamIdError
  | InvalidExpectedVersionError

/**
 * Errors a fetch with options `O` can fail with: `InvalidExpectedVersionError`
 * only when `O` sets an expected version.
 *
 * @since 0.2.0
 */
export type FetchErrorOf<O> =
  | Exclude<FetchError, InvalidExpectedVersionError>
  | (Sets<O, "expectedVersion"> extends true ? InvalidExpectedVersionError : never)

/**
 * Errors an exclusive fetch with options `O` can fail with: those of a fetch,
 * the lock's (`StreamLockedError`, `DeadlockError`), and `InvalidOptionError`
 * only when `O` sets a time-out.
 *
 * @since 0.2.0
 */
export type ExclusiveFetchErrorOf<O> =
  | FetchErrorOf<O>
  | StreamLockedError
  | DeadlockError
  | (Sets<O, "timeout"> extends true ? InvalidOptionError : never)

/**
 * Options of `append`.
 *
 * @since 0.2.0
 */
export interface AppendOptions {
  readonly expectedVersion?: number | undefined
}

/**
 * Errors `append` with options `O` can fail with: `InvalidExpectedVersionError`
 * only when `O` sets an expected version.
 *
 * @since 0.2.0
 */
export type AppendErrorOf<O> =
  | InvalidStreamIdError
  | (Sets<O, "expectedVersion"> extends true ? InvalidExpectedVersionError : never)

/**
 * Errors `saveChanges` can fail with.
 *
 * @since 0.1.0
 */
export type SaveError =
  | ConcurrencyError
  | DeadlockError
  | StreamExistsError
  | StreamArchivedError
  | EventEncodeError
  | EventStoreError
