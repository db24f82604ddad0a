/**
 * The testing kit: the in-memory store in one layer, and given/when/then
 * specifications of deciders, command handlers and projections (after
 * Emmett's `DeciderSpecification` and `ProjectionSpec`). Every specification
 * is an Effect on a fresh store, made to run inside `@effect/vitest`'s
 * `it.effect`: the store's lock time-outs, command retries and the daemon wait
 * on a live clock, so nothing stalls under `TestClock`.
 *
 * @since 0.2.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Aggregate from "./Aggregate.js"
import type * as EventStoreMemory from "./EventStoreMemory.js"
import type { InvalidOptionError } from "./Errors.js"
import * as internal from "./internal/testkit.js"
import * as ProjectionDaemon from "./ProjectionDaemon.js"
import type * as Projection from "./Projection.js"
import type * as Projections from "./Projections.js"
import * as Session from "./Session.js"
import type * as Subscription from "./Subscription.js"

/**
 * A specification's expectation was not met: `message` says what, with
 * `expected` and `actual` beside it (vitest shows them as a diff).
 *
 * @since 0.2.0
 */
export const AssertionError = internal.AssertionError

/**
 * @since 0.2.0
 */
export type AssertionError = internal.AssertionError

/**
 * A history: for each stream id, the events it holds before the command
 * (`[]` for none).
 *
 * @since 0.2.0
 */
export type History<E> = internal.History<E>

/**
 * What the test layer provides: the store, its registry and a projection daemon.
 *
 * @since 0.2.0
 */
export type Provided = internal.Provided

/**
 * Options of the test layer.
 *
 * @since 0.2.0
 */
export interface Options {
  /** Options of the in-memory store (its lock time-out, a state cache). */
  readonly store?: Omit<EventStoreMemory.Options, "waitClock"> | undefined
  /** Options of the projection daemon (batch size, poll interval). */
  readonly daemon?: ProjectionDaemon.Options | undefined
}

/**
 * The in-memory store with its registry and a projection daemon, in one
 * layer; each build starts empty. Its waits run on a live clock, so a test
 * under `TestClock` never stalls on a lock time-out or a retry's back-off;
 * the events' timestamps still come from the test's clock.
 *
 * @since 0.2.0
 */
export const layer = <const Registrations extends ReadonlyArray<Projections.Registration> = []>(
  registrations?: Registrations,
  options?: Options
): Layer.Layer<Provided, InvalidOptionError, Subscription.Context<Registrations[number]>> =>
  internal.layer({ ...options, registrations })

/**
 * Options of a specification: what its fresh store registers, and how it is set.
 *
 * @since 0.2.0
 */
export interface SpecOptions extends Options {
  /** Projections and subscriptions (needing nothing) to register beside the one under test. */
  readonly registrations?: ReadonlyArray<Projection.Projection | Subscription.Subscription<any, never>> | undefined
}

type Tag<Err> = Err extends { readonly _tag: infer T extends string } ? T : never

/**
 * A decider specification with its history given: `when` names the command.
 *
 * @since 0.2.0
 */
export interface Given<S, E> {
  /**
   * The command under test: any Effect on the store (a handler's call, a
   * `writeToAggregate`, a workflow of `Session` that saves), run in a session
   * of its own after the history.
   */
  readonly when: <A, Err, R>(command: Effect.Effect<A, Err, R>) => When<S, E, A, Err, Exclude<R, Provided | Session.Session>>
}

/**
 * A decider specification ready for its expectation; each is an Effect that
 * fails with `AssertionError` when it is not met.
 *
 * @since 0.2.0
 */
export interface When<S, E, A, Err, R> {
  /** The command succeeds, appending exactly these events (in order, compared structurally) to the aggregate's streams. */
  readonly then: (expected: ReadonlyArray<E>) => Effect.Effect<void, AssertionError, R>
  /** The command fails with an error of this tag, or one the predicate accepts. */
  readonly thenFails: (expected: Tag<Err> | ((error: Err) => boolean)) => Effect.Effect<void, AssertionError, R>
  /**
   * The command succeeds and leaves this state (the plain state, after the
   * new events) in the stream: `streamId`, else the one stream it appended to,
   * else the one stream of the history.
   */
  readonly thenState: (expected: S, streamId?: string) => Effect.Effect<void, AssertionError, R>
  /** The command succeeds; `check` sees its result and the events it appended (fail or throw to reject). */
  readonly thenSucceeds: <X, R2 = never>(
    check: (result: A, events: ReadonlyArray<E>) => Effect.Effect<X, AssertionError, R2> | void
  ) => Effect.Effect<void, AssertionError, R | R2>
}

// A spec's fresh store; a bad store option is a defect of the test, named by the store's error.
const provideStore = <A, Err, R>(
  options: SpecOptions | undefined,
  effect: Effect.Effect<A, Err, R>
): Effect.Effect<A, Err, Exclude<R, Provided>> => Effect.provide(effect, Layer.orDie(internal.layer(options)))

const failureOf = <A, Err>(exit: Exit.Exit<A, Err>): unknown =>
  Exit.isSuccess(exit) ? exit.value : Option.getOrElse(Cause.failureOption(exit.cause), () => Cause.pretty(exit.cause))

const makeWhen = <S, E, A, Err, R>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  history: History<E>,
  options: SpecOptions | undefined,
  command: Effect.Effect<A, Err, R>
): When<S, E, A, Err, Exclude<R, Provided | Session.Session>> => {
  type Out = Effect.Effect<void, AssertionError, Exclude<R, Provided | Session.Session>>
  const run = <R2>(check: (outcome: internal.Outcome<A, Err, E>) => Effect.Effect<unknown, AssertionError, R2>) =>
    provideStore(
      options,
      Effect.gen(function*() {
        yield* internal.write(aggregate, history)
        yield* check(yield* internal.outcome(aggregate, command))
      })
    ) as Out
  const succeeded = (outcome: internal.Outcome<A, Err, E>, what: string, expected: unknown): Effect.Effect<A, AssertionError> =>
    Exit.isSuccess(outcome.exit)
      ? Effect.succeed(outcome.exit.value)
      : internal.fail(
        `Expected the command to succeed (${what}), but ${internal.describeExit(outcome.exit, outcome.appended)}`,
        expected,
        failureOf(outcome.exit)
      )
  const events = (outcome: internal.Outcome<A, Err, E>) => outcome.appended.map((a) => a.event)
  return {
    then: (expected) =>
      run((outcome) =>
        Effect.zipRight(
          succeeded(outcome, "appending events", expected),
          internal.expectEqual("The command appended other events than expected.", expected, events(outcome))
        )
      ),
    thenFails: (expected) =>
      run((outcome) => {
        const failure = Exit.isFailure(outcome.exit) ? Cause.failureOption(outcome.exit.cause) : Option.none()
        const wanted = typeof expected === "string" ? `a failure tagged "${expected}"` : "a failure the predicate accepts"
        if (Option.isNone(failure)) {
          return internal.fail(`Expected ${wanted}, but ${internal.describeExit(outcome.exit, outcome.appended)}`, expected, failureOf(outcome.exit))
        }
        const error = failure.value
        const ok = typeof expected === "string" ? (error as { readonly _tag?: unknown })?._tag === expected : expected(error)
        return ok ? Effect.void : internal.fail(`Expected ${wanted}, but it failed with ${internal.show(error)}`, expected, error)
      }),
    thenState: (expected, streamId) =>
      run((outcome) =>
        Effect.gen(function*() {
          yield* succeeded(outcome, "leaving a state", expected)
          const id = streamId ?? only(outcome.appended.map((a) => a.streamId)) ?? only(history.map(([id]) => id))
          if (id === undefined) {
            return yield* internal.fail(
              "The command touched no single stream: name the stream whose state to check (thenState(expected, streamId))",
              expected,
              outcome.appended
            )
          }
          const state = yield* Effect.orDie(Session.run(Session.fetchLatest(aggregate, id)))
          if (Option.isNone(state)) return yield* internal.fail(`Stream "${id}" has no events, so no state`, expected, undefined)
          return yield* internal.expectEqual(`Stream "${id}" is not in the expected state.`, expected, state.value)
        })
      ),
    thenSucceeds: <X, R2>(check: (result: A, events: ReadonlyArray<E>) => Effect.Effect<X, AssertionError, R2> | void) =>
      run((outcome) =>
        Effect.flatMap(succeeded(outcome, "as checked", undefined), (result) =>
          Effect.suspend(() => {
            const checked = check(result, events(outcome))
            return Effect.isEffect(checked) ? Effect.asVoid(checked) : Effect.void
          }))
      ) as Effect.Effect<void, AssertionError, Exclude<R, Provided | Session.Session> | R2>
  }
}

/**
 * A decider specification: the aggregate's streams hold `history`, then the
 * command of `when` runs, then the expectation is checked. Each run is on a
 * fresh in-memory store.
 *
 * @since 0.2.0
 */
export const given = <S, E>(
  aggregate: Aggregate.Aggregate<S, E, any, any>,
  history: History<E>,
  options?: SpecOptions
): Given<S, E> => ({ when: (command) => makeWhen(aggregate, history, options, command) })

// The one distinct value, if there is exactly one.
const only = (values: ReadonlyArray<string>): string | undefined => {
  const distinct = new Set(values)
  return distinct.size === 1 ? values[0] : undefined
}

/**
 * A projection specification: events are given to streams (of any
 * aggregates, in order), then a document of the projection is checked. The
 * projection is registered on a fresh store; an Async one is caught up by the
 * daemon first.
 *
 * @since 0.2.0
 */
export interface ProjectionSpec<S> {
  /** More history: events of `aggregate`'s streams, written after what was given before. */
  readonly given: <E>(aggregate: Aggregate.Aggregate<any, E, any, any>, history: History<E>) => ProjectionSpec<S>
  /** The document under `key` (a snapshot's: the stream id) is this one, compared structurally. */
  readonly then: (key: string, expected: S) => Effect.Effect<void, AssertionError>
  /** There is no document under `key`. */
  readonly thenMissing: (key: string) => Effect.Effect<void, AssertionError>
}

type Write = Effect.Effect<void, never, Provided>

const document = <S>(projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>, key: string) =>
  Effect.orDie(Effect.gen(function*() {
    if (projection.lifecycle === "Async") yield* ProjectionDaemon.waitForNonStale()
    // A Live snapshot stores nothing: its document is the state folded on read.
    return yield* Session.run(
      projection._tag === "Snapshot" && projection.lifecycle === "Live"
        ? Session.fetchLatest(projection.aggregate, key)
        : Session.loadDocument(projection, key)
    )
  }))

const projectionSpec = <S>(
  projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
  writes: ReadonlyArray<Write>,
  options: SpecOptions | undefined
): ProjectionSpec<S> => {
  const run = (check: (doc: Option.Option<S>) => Effect.Effect<void, AssertionError>, key: string) =>
    provideStore(
      { ...options, registrations: [projection, ...(options?.registrations ?? [])] },
      Effect.flatMap(Effect.zipRight(Effect.all(writes, { discard: true }), document(projection, key)), check)
    )
  return {
    given: (aggregate, history) => projectionSpec(projection, [...writes, internal.write(aggregate, history)], options),
    then: (key, expected) =>
      run((doc) =>
        Option.isNone(doc)
          ? internal.fail(`Projection ${projection.name} has no document "${key}"`, expected, undefined)
          : internal.expectEqual(`Document "${key}" of projection ${projection.name} is not the expected one.`, expected, doc.value), key),
    thenMissing: (key) =>
      run((doc) =>
        Option.isSome(doc)
          ? internal.fail(`Expected projection ${projection.name} to have no document "${key}", but it has one`, undefined, doc.value)
          : Effect.void, key)
  }
}

/**
 * Starts a projection specification (snapshot or multi-stream), with no
 * history yet.
 *
 * @since 0.2.0
 */
export const projection = <S>(
  projection: Projection.Snapshot<S, any> | Projection.MultiStream<S, any>,
  options?: SpecOptions
): ProjectionSpec<S> => projectionSpec(projection, [], options)
