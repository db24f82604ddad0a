/**
 * Type-level checks of the command workflow's inference: they run as ordinary
 * tests (the assertions are no-ops at run time) and are proved by
 * `tsc --noEmit`, which type-checks test/ too. A wrong inference fails the
 * type check; each `@ts-expect-error` line fails it if the error goes away.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { describe, expectTypeOf, it } from "vitest"
import {
  Aggregate,
  ChronicleTest,
  CommandHandler,
  type ConcurrencyError,
  type DeadlockError,
  type EventDecodeError,
  type EventEncodeError,
  EventStore,
  type EventStoreError,
  type InvalidExpectedVersionError,
  type InvalidOptionError,
  type InvalidStreamIdError,
  Session,
  type StreamArchivedError,
  type StreamExistsError,
  type StreamLockedError
} from "effect-chronicle"

class Opened extends Schema.TaggedClass<Opened>()("Opened", {}) {}
class Closed extends Schema.TaggedClass<Closed>()("Closed", {}) {}
const DoorEvent = Schema.Union(Opened, Closed)

const Door = Aggregate.make({
  name: "Door",
  events: DoorEvent,
  initial: { closed: false },
  evolve: (_state, event) => ({ closed: event._tag === "Closed" })
})

class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {}) {}
class AlreadyClosed extends Schema.TaggedError<AlreadyClosed>()("AlreadyClosed", {}) {}
class Service extends Effect.Tag("test/Service")<Service, { readonly ok: boolean }>() {}

interface Close {
  readonly id: string
  readonly version?: number
}

/** What every workflow can fail with, whatever its options. */
type Always =
  | ConcurrencyError
  | DeadlockError
  | StreamExistsError
  | EventDecodeError
  | EventEncodeError
  | EventStoreError
  | InvalidStreamIdError
  | StreamArchivedError

type ErrorOf<F> = F extends (...args: any) => Effect.Effect<any, infer E, any> ? E : never
type ContextOf<F> = F extends (...args: any) => Effect.Effect<any, any, infer R> ? R : never

describe("decide typing", () => {
  it("two Effect.fail branches of a plain function infer the union of both errors", () => {
    const handler = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: (_cmd, state) =>
        Option.isNone(state)
          ? Effect.fail(new NotFound())
          : state.value.closed
          ? Effect.fail(new AlreadyClosed())
          : [new Closed()]
    })
    expectTypeOf<ErrorOf<typeof handler>>().toEqualTypeOf<NotFound | AlreadyClosed | Always>()
    expectTypeOf<ContextOf<typeof handler>>().toEqualTypeOf<EventStore.EventStore>()
  })

  it("mixed branches: a plain array in one, an Effect needing a service in another", () => {
    const handler = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: (_cmd, state) =>
        Option.isSome(state)
          ? [new Closed()]
          : Effect.flatMap(Service, (s) => s.ok ? Effect.succeed([new Opened(), new Closed()]) : Effect.fail(new NotFound()))
    })
    expectTypeOf<ErrorOf<typeof handler>>().toEqualTypeOf<NotFound | Always>()
    expectTypeOf<ContextOf<typeof handler>>().toEqualTypeOf<Service | EventStore.EventStore>()
  })

  it("an Effect.gen decide infers its errors and the events' type is checked", () => {
    const handler = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: (_cmd, state) =>
        Effect.gen(function*() {
          if (Option.isNone(state)) return yield* new NotFound()
          if (state.value.closed) return yield* new AlreadyClosed()
          return [new Closed()]
        })
    })
    expectTypeOf<ErrorOf<typeof handler>>().toEqualTypeOf<NotFound | AlreadyClosed | Always>()
    CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      // @ts-expect-error an event the aggregate does not know is refused
      decide: () => [{ _tag: "Painted" }]
    })
  })

  it("a pure decide that cannot fail adds no error", () => {
    const handler = CommandHandler.make(Door, { id: (cmd: Close) => cmd.id, decide: () => [new Opened()] })
    expectTypeOf<ErrorOf<typeof handler>>().toEqualTypeOf<Always>()
  })
})

describe("error channels narrowed by the options", () => {
  it("CommandHandler: StreamLockedError only when exclusive, InvalidExpectedVersionError only with expectedVersion", () => {
    const plain = CommandHandler.make(Door, { id: (cmd: Close) => cmd.id, decide: () => [new Closed()] })
    expectTypeOf<ErrorOf<typeof plain>>().not.toMatchTypeOf<StreamLockedError>()
    expectTypeOf<Extract<ErrorOf<typeof plain>, StreamLockedError | InvalidExpectedVersionError | InvalidOptionError>>()
      .toEqualTypeOf<never>()

    const exclusive = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: () => [new Closed()],
      exclusive: true,
      retry: Schedule.recurs(2)
    })
    expectTypeOf<ErrorOf<typeof exclusive>>().toEqualTypeOf<Always | StreamLockedError>()

    const notExclusive = CommandHandler.make(Door, { id: (cmd: Close) => cmd.id, decide: () => [], exclusive: false })
    expectTypeOf<ErrorOf<typeof notExclusive>>().toEqualTypeOf<Always>()

    const versioned = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      expectedVersion: (cmd) => cmd.version,
      decide: () => [new Closed()]
    })
    expectTypeOf<ErrorOf<typeof versioned>>().toEqualTypeOf<Always | InvalidExpectedVersionError>()

    const timed = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: () => [new Closed()],
      exclusive: true,
      timeout: "1 second"
    })
    expectTypeOf<ErrorOf<typeof timed>>().toEqualTypeOf<Always | StreamLockedError | InvalidOptionError>()
  })

  it("EventStore.writeToAggregate narrows the same way", () => {
    const f = (stream: Session.EventStream<{ closed: boolean }, Opened | Closed>) => stream.appendOne(new Closed())
    const plain = EventStore.writeToAggregate(Door, "d", f)
    expectTypeOf(plain).toEqualTypeOf<
      Effect.Effect<EventStore.HandlerResult<{ closed: boolean }, Opened | Closed>, Always, EventStore.EventStore>
    >()
    const exclusive = EventStore.writeToAggregate(Door, "d", f, { exclusive: true })
    expectTypeOf<Effect.Effect.Error<typeof exclusive>>().toEqualTypeOf<Always | StreamLockedError>()
    const versioned = EventStore.writeToAggregate(Door, "d", f, { expectedVersion: 3 })
    expectTypeOf<Effect.Effect.Error<typeof versioned>>().toEqualTypeOf<Always | InvalidExpectedVersionError>()
    // Options of the wide type may set anything: nothing is left out.
    const wide: EventStore.WriteOptions = {}
    const widened = EventStore.writeToAggregate(Door, "d", f, wide)
    expectTypeOf<Effect.Effect.Error<typeof widened>>().toEqualTypeOf<
      Always | StreamLockedError | InvalidExpectedVersionError | InvalidOptionError
    >()
  })

  it("Session fetches and append", () => {
    type Fetch = ConcurrencyError | EventStoreError | EventDecodeError | InvalidStreamIdError | StreamArchivedError
    const fetched = Session.fetchForWriting(Door, "d")
    expectTypeOf<Effect.Effect.Error<typeof fetched>>().toEqualTypeOf<Fetch>()
    const atVersion = Session.fetchForWriting(Door, "d", { expectedVersion: 1 })
    expectTypeOf<Effect.Effect.Error<typeof atVersion>>().toEqualTypeOf<Fetch | InvalidExpectedVersionError>()
    const consistent = Session.fetchForWriting(Door, "d", { alwaysEnforceConsistency: true })
    expectTypeOf<Effect.Effect.Error<typeof consistent>>().toEqualTypeOf<Fetch>()
    const locked = Session.fetchForExclusiveWriting(Door, "d")
    expectTypeOf<Effect.Effect.Error<typeof locked>>().toEqualTypeOf<Fetch | StreamLockedError | DeadlockError>()
    const timed = Session.fetchForExclusiveWriting(Door, "d", { timeout: "1 second" })
    expectTypeOf<Effect.Effect.Error<typeof timed>>().toEqualTypeOf<
      Fetch | StreamLockedError | DeadlockError | InvalidOptionError
    >()
    const appended = Session.append(Door, "d", [new Opened()])
    expectTypeOf<Effect.Effect.Error<typeof appended>>().toEqualTypeOf<InvalidStreamIdError>()
    const appendedAt = Session.append(Door, "d", [new Opened()], { expectedVersion: 0 })
    expectTypeOf<Effect.Effect.Error<typeof appendedAt>>().toEqualTypeOf<InvalidStreamIdError | InvalidExpectedVersionError>()
  })
})

describe("ChronicleTest typing", () => {
  it("thenFails takes only a tag the command can fail with; when needs nothing the kit provides", () => {
    const handler = CommandHandler.make(Door, {
      id: (cmd: Close) => cmd.id,
      decide: (_cmd, state) => Option.isNone(state) ? Effect.fail(new NotFound()) : [new Closed()]
    })
    const spec = ChronicleTest.given(Door, []).when(handler({ id: "d" }))
    expectTypeOf(spec.thenFails("NotFound")).toEqualTypeOf<Effect.Effect<void, ChronicleTest.AssertionError>>()
    // @ts-expect-error AlreadyClosed is not among the handler's errors
    spec.thenFails("AlreadyClosed")
    const needing = ChronicleTest.given(Door, []).when(Effect.zipRight(Service, handler({ id: "d" })))
    expectTypeOf(needing.then([])).toEqualTypeOf<Effect.Effect<void, ChronicleTest.AssertionError, Service>>()
  })
})
