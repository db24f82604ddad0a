/**
 * The command workflow, in one home: fetch a stream for writing, run the
 * decision on it, save, in a session of its own, retried on conflicts and
 * deadlocks per a Schedule. `EventStore.writeToAggregate` and
 * `CommandHandler.make` are its two faces.
 *
 * @internal
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Aggregate from "../Aggregate.js"
import type {
  ConcurrencyError,
  DeadlockError,
  InvalidOptionError,
  StreamLockedError
} from "../Errors.js"
import * as Session from "../Session.js"
import * as LeanFiber from "./fiber.js"
import * as SessionInternal from "./session.js"
import * as Tracing from "./tracing.js"
import { lockTimeout, type Sets } from "./input.js"
import * as internal from "./store.js"

/**
 * The outcome of a command: the stream's version and state after the new
 * events, computed without another read.
 *
 * @since 0.1.0
 */
export interface HandlerResult<S, E> {
  readonly streamId: string
  readonly version: number
  readonly state: Option.Option<S>
  readonly events: ReadonlyArray<E>
}

/**
 * Options of `writeToAggregate`.
 *
 * @since 0.1.0
 */
export interface WriteOptions {
  readonly expectedVersion?: number | undefined
  readonly exclusive?: boolean | undefined
  /** Lock time-out of an exclusive fetch. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Re-runs fetch-run-save on `ConcurrencyError` and `DeadlockError` only, as the schedule allows. */
  readonly retry?: Schedule.Schedule<any, ConcurrencyError | DeadlockError> | undefined
}

/**
 * The failures a command can end with under options `O`: those of the fetch
 * and the save, plus only what the options make possible
 * (`InvalidExpectedVersionError` with an expected version, `StreamLockedError`
 * when exclusive, `InvalidOptionError` with a time-out).
 *
 * @since 0.2.0
 */
export type WriteError<O> =
  | Session.FetchErrorOf<O>
  | Session.SaveError
  | ("exclusive" extends keyof O ? true extends O["exclusive" & keyof O] ? StreamLockedError : never : never)
  | (Sets<O, "timeout"> extends true ? InvalidOptionError : never)

const collectAppended = <S, E>(stream: Session.EventStream<S, E>) => {
  const events: Array<E> = []
  const wrapped: Session.EventStream<S, E> = {
    ...stream,
    appendOne: (event) => Effect.zipRight(Effect.sync(() => events.push(event)), stream.appendOne(event)),
    appendMany: (many) => {
      const all = Array.from(many)
      return Effect.zipRight(Effect.sync(() => events.push(...all)), stream.appendMany(all))
    }
  }
  return { events, stream: wrapped }
}

/**
 * Fetches a stream for writing, runs `f` on it, and saves, in a session of its
 * own. With `retry`, a `ConcurrencyError` re-runs the whole workflow.
 *
 * @since 0.1.0
 */
export const writeToAggregate = <S, E, Err, R, const O extends WriteOptions = {}>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  f: (stream: Session.EventStream<S, E>) => Effect.Effect<void, Err, R>,
  options?: O
): Effect.Effect<HandlerResult<S, E>, Err | WriteError<O>, Exclude<R, Session.Session> | internal.EventStore> =>
  // The failures the options rule out cannot happen at run time: only the type is narrowed.
  write(aggregate, id, f, options) as Effect.Effect<HandlerResult<S, E>, any, Exclude<R, Session.Session> | internal.EventStore>

// Retries `effect` on failure as `schedule` allows; the schedule's delays run
// on the store's wait clock, the tries themselves on the fiber's own.
const retrying = <A, Err, R>(
  effect: Effect.Effect<A, Err, R>,
  schedule: Schedule.Schedule<unknown, Err>
): Effect.Effect<A, Err, R | internal.EventStore> =>
  Effect.flatMap(Effect.zip(internal.EventStore, Schedule.driver(schedule)), ([store, driver]) => {
    const loop: Effect.Effect<A, Err, R> = Effect.catchAll(effect, (error) =>
      Effect.matchEffect(internal.onWaitClock(store, driver.next(error)), {
        onFailure: () => Effect.fail(error),
        onSuccess: () => loop
      }))
    return loop
  })

const write = <S, E, Err, R>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  id: string,
  f: (stream: Session.EventStream<S, E>) => Effect.Effect<void, Err, R>,
  options?: WriteOptions
) => {
  // A bad time-out fails at the call, exclusive or not, before any session starts.
  const timeout = options?.timeout === undefined ? undefined : lockTimeout("timeout", options.timeout)
  if (timeout !== undefined && Either.isLeft(timeout)) return Effect.fail(timeout.left)
  // Combinators rather than a generator: a command's steps are the hot path's.
  const once = Session.run(LeanFiber.withService(Session.Session, (session) => {
    const fetch = options?.exclusive
      ? session.fetchForExclusiveWriting(aggregate, id, { expectedVersion: options.expectedVersion, timeout: options.timeout })
      : session.fetchForWriting(aggregate, id, { expectedVersion: options?.expectedVersion })
    return Effect.flatMap(fetch, (fetched) => {
      const { events, stream } = collectAppended(fetched)
      return Effect.zipRight(
        f(stream),
        Effect.flatMap(session.saveChanges, (saved) =>
          Effect.withFiberRuntime<HandlerResult<S, E>>((fiber) => {
            const known = SessionInternal.known(session, aggregate, id, fiber.getFiberRef(internal.currentTenant))
            const version = saved.streams.find((s) => s.streamId === id)?.version ?? fetched.version
            return Effect.succeed({
              streamId: id,
              version,
              state: Option.match(known, { onNone: () => fetched.aggregate, onSome: (k) => k.state as Option.Option<S> }),
              events
            })
          }))
      )
    })
  }))
  const attributes = { "chronicle.stream_id": id, "chronicle.aggregate": aggregate.name }
  if (options?.retry === undefined) {
    return Tracing.span(Tracing.span(once, "chronicle.command.attempt", { ...attributes, "chronicle.attempt": 1 }), "chronicle.command", attributes)
  }
  // Only a ConcurrencyError or DeadlockError is retried: any other failure stops the schedule at once.
  const onlyConflicts = Schedule.whileInput(
    options.retry as Schedule.Schedule<unknown, unknown>,
    (error: unknown) => (error as any)?._tag === "ConcurrencyError" || (error as any)?._tag === "DeadlockError"
  )
  // Each try is an attempt of the command, in a span of its own; tries after the first are retries.
  const attempts = Effect.suspend(() => {
    let attempt = 0
    const each = Effect.suspend(() => {
      attempt++
      const tried = Tracing.span(once, "chronicle.command.attempt", { ...attributes, "chronicle.attempt": attempt })
      return attempt === 1 ? tried : Effect.zipRight(Metric.increment(Tracing.commandRetries), tried)
    })
    return retrying(each, onlyConflicts)
  })
  return Tracing.span(attempts, "chronicle.command", attributes)
}
