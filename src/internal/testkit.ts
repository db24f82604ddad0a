/**
 * The machinery of `ChronicleTest`: the test store, writing a history,
 * collecting what a command appended, structural comparison and readable
 * messages. `ChronicleTest.ts` is its face.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Utils from "effect/Utils"
import type * as Aggregate from "../Aggregate.js"
import * as EventStoreMemory from "../EventStoreMemory.js"
import * as ProjectionDaemon from "../ProjectionDaemon.js"
import * as Projections from "../Projections.js"
import * as Session from "../Session.js"
import * as ReadAll from "./readAll.js"
import type { EventStore } from "./store.js"

/**
 * A specification's expectation was not met. `expected` and `actual` are own
 * fields, so test runners (vitest) show them side by side as a diff.
 *
 * @since 0.2.0
 */
export class AssertionError extends Schema.TaggedError<AssertionError>()("AssertionError", {
  message: Schema.String,
  expected: Schema.Unknown,
  actual: Schema.Unknown
}) {}

/** @internal the events of one stream, as a history is given. */
export type History<E> = ReadonlyArray<readonly [streamId: string, events: ReadonlyArray<E>]>

/** @internal options of the test store. */
export interface StoreOptions {
  readonly registrations?: ReadonlyArray<Projections.Registration> | undefined
  readonly store?: Omit<EventStoreMemory.Options, "waitClock"> | undefined
  readonly daemon?: ProjectionDaemon.Options | undefined
}

/** @internal what the test layer provides. */
export type Provided = EventStore | Projections.Projections | ProjectionDaemon.ProjectionDaemon

/**
 * @internal the in-memory store, its registry and a projection daemon. The
 * store waits (lock time-outs, retry back-off, the daemon's polling) on a
 * live clock, so that nothing stalls under `TestClock`; timestamps of events
 * still come from the test's clock.
 */
export const layer = (options: StoreOptions | undefined) =>
  ProjectionDaemon.layer(options?.daemon).pipe(
    Layer.provideMerge(EventStoreMemory.layerWith({ ...options?.store, waitClock: Clock.make() })),
    Layer.provideMerge(Projections.layer(options?.registrations ?? []))
  )

/** @internal a value as readable text: JSON where it can be, indented. */
export const show = (value: unknown): string => {
  try {
    const json = JSON.stringify(value, (_key, v) => typeof v === "bigint" ? `${v}n` : v, 2)
    return json === undefined ? String(value) : json
  } catch {
    return Inspectable.format(value)
  }
}

/** @internal deep structural equality: Effect's `Equal` (classes of Schema and Data), arrays and plain objects by content. */
export const equals = (a: unknown, b: unknown): boolean => Utils.structuralRegion(() => Equal.equals(a, b))

/** @internal fails with an `AssertionError` showing both sides unless they are equal. */
export const expectEqual = (what: string, expected: unknown, actual: unknown): Effect.Effect<void, AssertionError> =>
  equals(expected, actual)
    ? Effect.void
    : Effect.fail(
      new AssertionError({
        message: `${what}\nExpected: ${show(expected)}\nActual:   ${show(actual)}`,
        expected,
        actual
      })
    )

/** @internal an `AssertionError` of a failure that needs no diff. */
export const fail = (message: string, expected: unknown, actual: unknown) =>
  Effect.fail(new AssertionError({ message, expected, actual }))

// Setting up is not what is under test: a history the store refuses is a defect that names it.
const setup = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, never, R> =>
  Effect.catchAll(effect, (error) => Effect.die(new Error(`ChronicleTest: ${what}: ${show(error)}`)))

/** @internal writes a history, every stream in one save (streams without events are skipped). */
export const write = <E>(aggregate: Aggregate.Aggregate<any, E, any, any>, history: History<E>) =>
  setup(
    `the given events of ${aggregate.name} could not be written`,
    Session.run(Effect.gen(function*() {
      for (const [id, events] of history) {
        if (events.length > 0) yield* Session.append(aggregate, id, events)
      }
      yield* Session.saveChanges
    }))
  )

/** @internal the position after the last event of the log (every tenant), or undefined when it is empty. */
export const head = setup(
  "the log could not be read",
  Effect.map(Stream.runLast(ReadAll.readAll({ allTenants: true })), Option.map((e) => e.position))
)

/** @internal one appended event of the aggregate under test. */
export interface Appended<E> {
  readonly streamId: string
  readonly event: E
}

/** @internal the events of the aggregate's streams after `after`, decoded by its event Schema. */
export const appendedSince = <E>(aggregate: Aggregate.Aggregate<any, E, any, any>, after: Option.Option<ReadAll.Position>) =>
  setup(
    "the appended events could not be read",
    Effect.flatMap(
      Stream.runCollect(
        ReadAll.readAll({ allTenants: true, streamTypes: [aggregate.name], after: Option.getOrUndefined(after) })
      ),
      (all) =>
        Effect.forEach(Chunk.toReadonlyArray(all), (envelope) => {
          const decoded = aggregate.codec.decode(envelope.type, envelope.data)
          return Either.isRight(decoded)
            ? Effect.succeed<Appended<E>>({ streamId: envelope.streamId, event: decoded.right })
            : Effect.fail(`event ${envelope.version} of stream "${envelope.streamId}" does not decode: ${decoded.left}`)
        })
    )
  )

/** @internal what running the command under test gave. */
export interface Outcome<A, Err, E> {
  readonly exit: Exit.Exit<A, Err>
  readonly appended: ReadonlyArray<Appended<E>>
}

/** @internal runs `when` in a session of its own, and collects what it appended. */
export const outcome = <E, A, Err, R>(
  aggregate: Aggregate.Aggregate<any, E, any, any>,
  when: Effect.Effect<A, Err, R>
) =>
  Effect.gen(function*() {
    const before = yield* head
    const exit = yield* Effect.exit(Session.run(when))
    const appended = yield* appendedSince(aggregate, before)
    return { exit, appended } satisfies Outcome<A, Err, E>
  })

/** @internal how a command ended, for messages. */
export const describeExit = (exit: Exit.Exit<unknown, unknown>, appended: ReadonlyArray<Appended<unknown>>): string =>
  Exit.match(exit, {
    onSuccess: () => `it succeeded, appending ${show(appended.map((a) => a.event))}`,
    onFailure: (cause) =>
      Option.match(Cause.failureOption(cause), {
        onNone: () => `it died: ${Cause.pretty(cause)}`,
        onSome: (error) => `it failed with ${show(error)}`
      })
  })
