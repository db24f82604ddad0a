/**
 * Decider-style command handlers: `decide(command, state)` returns the events,
 * the workflow fetches, decides, appends and saves, retrying on conflicts.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Aggregate from "./Aggregate.js"
import type { ConcurrencyError, DeadlockError, InvalidOptionError, StreamLockedError } from "./Errors.js"
import * as Command from "./internal/command.js"
import type { EventStore } from "./internal/store.js"
import type * as Session from "./Session.js"

/**
 * The result of a handled command.
 *
 * @since 0.1.0
 */
export type HandlerResult<S, E> = Command.HandlerResult<S, E>

/**
 * How a command is handled.
 *
 * @since 0.1.0
 */
export interface Options<C, S, E, Err, R> {
  /** The id of the stream the command targets. */
  readonly id: (command: C) => string
  /** The version the command was issued against, if it carries one. */
  readonly expectedVersion?: ((command: C) => number | undefined) | undefined
  /** Decides the new events from the command and the current state; may reject by failing. */
  readonly decide: (command: C, state: Option.Option<S>) => Effect.Effect<ReadonlyArray<E>, Err, R> | ReadonlyArray<E>
  /** Re-runs fetch-decide-save on `ConcurrencyError` and `DeadlockError` only, as the schedule allows. */
  readonly retry?: Schedule.Schedule<any, ConcurrencyError | DeadlockError> | undefined
  /** Holds the stream's lock from fetch to save. */
  readonly exclusive?: boolean | undefined
  /** Lock time-out of the exclusive fetch. */
  readonly timeout?: import("effect/Duration").DurationInput | undefined
}

/**
 * A command handler for one aggregate.
 *
 * @since 0.1.0
 */
export const make = <S, E, C, Err = never, R = never>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  options: Options<C, S, E, Err, R>
) =>
(command: C): Effect.Effect<
  HandlerResult<S, E>,
  Err | ConcurrencyError | DeadlockError | StreamLockedError | InvalidOptionError | Session.FetchError | Session.SaveError,
  R | EventStore
> =>
  Command.writeToAggregate(
    aggregate,
    options.id(command),
    (stream) => {
      const decided = options.decide(command, stream.aggregate)
      return Effect.isEffect(decided)
        ? Effect.flatMap(decided, (events) => stream.appendMany(events))
        : stream.appendMany(decided)
    },
    {
      expectedVersion: options.expectedVersion?.(command),
      exclusive: options.exclusive,
      timeout: options.timeout,
      retry: options.retry
    }
  )
