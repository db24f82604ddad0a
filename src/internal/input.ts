import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { InvalidOptionError } from "../Errors.js"

// NUL, and a UTF-16 surrogate without its pair: PostgreSQL text and jsonb
// cannot hold the first and fold the second into U+FFFD, so both stores
// refuse them rather than store what PostgreSQL would change.
const badText = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** @internal why a string cannot be stored as it is, or undefined when it can. */
export const textProblem = (text: string): string | undefined => {
  const found = badText.exec(text)
  if (found === null) return undefined
  return found[0] === "\u0000"
    ? "a NUL character"
    : `a lone surrogate (\\u${found[0].charCodeAt(0).toString(16).toUpperCase()})`
}

/** @internal the longest lock time-out PostgreSQL takes (`lock_timeout` is an int of milliseconds). */
export const maxLockTimeoutMillis = 2_147_483_647

const negative = (input: unknown): boolean =>
  typeof input === "number" || typeof input === "bigint"
    ? input < 0
    : typeof input === "string"
    ? /^\s*-/.test(input)
    : Array.isArray(input) && input.some(negative)

/**
 * @internal a lock time-out as a Duration, or the `InvalidOptionError` naming
 * `option`. `Duration.decode` turns NaN and negative inputs into zero, so they
 * are caught on the input before it is decoded.
 */
export const lockTimeout = (option: string, input: Duration.DurationInput): Either.Either<Duration.Duration, InvalidOptionError> => {
  const fail = (reason: string) => Either.left(new InvalidOptionError({ option, value: input, reason }))
  if (typeof input === "number" && Number.isNaN(input)) return fail("must be a number of milliseconds, got NaN")
  if (Array.isArray(input) && input.some((n) => typeof n === "number" && Number.isNaN(n))) return fail("must not hold NaN")
  if (negative(input)) return fail("must not be negative")
  let duration: Duration.Duration
  try {
    duration = Duration.decode(input)
  } catch {
    return fail("is not a Duration")
  }
  const millis = Duration.toMillis(duration)
  if (!Number.isFinite(millis)) return fail("must be finite")
  if (Math.round(millis) > maxLockTimeoutMillis) {
    return fail(`must be at most ${maxLockTimeoutMillis} ms (PostgreSQL's limit), got ${millis} ms`)
  }
  return Either.right(duration)
}

/**
 * @internal whether an options type sets option `K` to something other than
 * undefined: true when it may (a wide options type counts as setting it), so
 * an error channel narrowed by it never leaves out a possible failure.
 */
export type Sets<O, K extends PropertyKey> = K extends keyof O ? [Exclude<O[K], undefined>] extends [never] ? false : true
  : false
