/**
 * Validation of stream ids, shared by every store so that a malformed id is
 * rejected before anything touches storage.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { InvalidStreamIdError } from "./Errors.js"
import { textProblem } from "./internal/input.js"

/**
 * The longest stream id accepted, in UTF-16 code units.
 *
 * @since 0.1.0
 */
export const maxLength = 200

/**
 * Returns the reason an id is invalid, or `undefined` when it is a valid id.
 *
 * @since 0.1.0
 */
export const invalidReason = (id: unknown): string | undefined => {
  if (typeof id !== "string") return `must be a string, got ${id === null ? "null" : typeof id}`
  if (id.length === 0) return "must not be empty"
  if (id.trim().length === 0) return "must not be only white space"
  if (id.length > maxLength) return `must be at most ${maxLength} characters, got ${id.length}`
  // PostgreSQL text cannot hold NUL and folds lone surrogates into U+FFFD (two
  // ids would become one stream there): rejecting both keeps the stores alike.
  const problem = textProblem(id)
  return problem === undefined ? undefined : `must not contain ${problem}`
}

/**
 * Succeeds with the id when it is valid, fails with `InvalidStreamIdError` otherwise.
 *
 * @since 0.1.0
 */
export const validate = (id: unknown): Effect.Effect<string, InvalidStreamIdError> => {
  const reason = invalidReason(id)
  return reason === undefined
    ? Effect.succeed(id as string)
    : Effect.fail(new InvalidStreamIdError({ streamId: id, reason }))
}
