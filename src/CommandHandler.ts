/**
 * Decider-style command handlers: `decide(command, state)` returns the events,
 * the workflow fetches, decides, appends and saves, retrying on conflicts.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Aggregate from "./Aggregate.js"
import type { ConcurrencyError, DeadlockError } from "./Errors.js"
import * as Command from "./internal/command.js"
import type { EventStore } from "./internal/store.js"

/**
 * The result of a handled command.
 *
 * @since 0.1.0
 */
export type HandlerResult<S, E> = Command.HandlerResult<S, E>

/**
 * What `decide` may return: the events, or an Effect of them that may fail
 * (a rejection) and need services.
 *
 * @since 0.2.0
 */
export type Decision<E> = ReadonlyArray<E> | Effect.Effect<ReadonlyArray<E>, any, any>

/**
 * The rejections of a decision: the union of the errors of every Effect it may
 * return (each branch of a plain-function `decide` counts).
 *
 * @since 0.2.0
 */
export type DecisionError<D> = D extends Effect.Effect<any, infer Err, any> ? Err : never

/**
 * The services a decision needs.
 *
 * @since 0.2.0
 */
export type DecisionContext<D> = D extends Effect.Effect<any, any, infer R> ? R : never

/**
 * How a command is handled. `D` is what `decide` returns (inferred whole, so
 * that its branches' errors add up); `X`, `V` and `T` are the types of
 * `exclusive`, what `expectedVersion` returns and `timeout`, so that the handler's error
 * channel holds only what those options make possible.
 *
 * @since 0.1.0
 */
export interface Options<
  C,
  S,
  E,
  D extends Decision<E> = Decision<E>,
  X extends boolean | undefined = boolean | undefined,
  V extends number | undefined = number | undefined,
  T extends Duration.DurationInput | undefined = Duration.DurationInput | undefined
> {
  /** The id of the stream the command targets. */
  readonly id: (command: C) => string
  /** The version the command was issued against, if it carries one. */
  readonly expectedVersion?: ((command: C) => V) | undefined
  /** Decides the new events from the command and the current state; may reject by failing. */
  readonly decide: (command: C, state: Option.Option<S>) => D
  /** Re-runs fetch-decide-save on `ConcurrencyError` and `DeadlockError` only, as the schedule allows. */
  readonly retry?: Schedule.Schedule<any, ConcurrencyError | DeadlockError> | undefined
  /** Holds the stream's lock from fetch to save. */
  readonly exclusive?: X
  /** Lock time-out of the exclusive fetch. */
  readonly timeout?: T
}

/**
 * The failures of a handler: its decision's rejections and the workflow's,
 * narrowed by its options (no `StreamLockedError` unless `exclusive`, no
 * `InvalidExpectedVersionError` without `expectedVersion`, no
 * `InvalidOptionError` without `timeout`).
 *
 * @since 0.2.0
 */
export type HandlerError<D, X, V, T> =
  | DecisionError<D>
  | Command.WriteError<{ readonly exclusive: X; readonly expectedVersion: V; readonly timeout: T }>

/**
 * A command handler for one aggregate.
 *
 * @since 0.1.0
 */
export const make = <
  S,
  E,
  C,
  D extends Decision<E>,
  X extends boolean | undefined = undefined,
  V extends number | undefined = never,
  T extends Duration.DurationInput | undefined = undefined
>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  options: Options<C, S, E, D, X, V, T>
) =>
(command: C): Effect.Effect<HandlerResult<S, E>, HandlerError<D, X, V, T>, DecisionContext<D> | EventStore> =>
  Command.writeToAggregate(
    aggregate,
    options.id(command),
    (stream) => {
      const decided: Decision<E> = options.decide(command, stream.aggregate)
      return Effect.isEffect(decided)
        ? Effect.flatMap(decided, (events) => stream.appendMany(events))
        : stream.appendMany(decided as ReadonlyArray<E>)
    },
    {
      expectedVersion: options.expectedVersion?.(command),
      exclusive: options.exclusive,
      timeout: options.timeout,
      retry: options.retry
    }
  ) as Effect.Effect<HandlerResult<S, E>, any, any>
