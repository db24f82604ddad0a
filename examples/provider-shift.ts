/**
 * The ProviderShift aggregate and its CompleteCharting handler, after Marten's
 * "CQRS command handler workflow" documentation: the command carries the
 * version the client saw, and a stale command is rejected.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate, CommandHandler, Session } from "effect-chronicle"

export class ProviderJoined extends Schema.TaggedClass<ProviderJoined>()("ProviderJoined", {
  boardId: Schema.String,
  providerId: Schema.String
}) {}
export class ProviderReady extends Schema.TaggedClass<ProviderReady>()("ProviderReady", {}) {}
export class PatientAssigned extends Schema.TaggedClass<PatientAssigned>()("PatientAssigned", {
  patientId: Schema.String
}) {}
export class ChartingStarted extends Schema.TaggedClass<ChartingStarted>()("ChartingStarted", {}) {}
export class ChartingFinished extends Schema.TaggedClass<ChartingFinished>()("ChartingFinished", {}) {}
export const ShiftEvent = Schema.Union(ProviderJoined, ProviderReady, PatientAssigned, ChartingStarted, ChartingFinished)
export type ShiftEvent = typeof ShiftEvent.Type

export const ProviderStatus = Schema.Literal("Ready", "Assigned", "Charting", "Paused")
export const ProviderShiftState = Schema.Struct({
  boardId: Schema.String,
  providerId: Schema.String,
  status: ProviderStatus,
  patientId: Schema.optional(Schema.String)
})
export type ProviderShiftState = typeof ProviderShiftState.Type

export const ProviderShift = Aggregate.make({
  name: "ProviderShift",
  events: ShiftEvent,
  state: ProviderShiftState,
  initial: { boardId: "", providerId: "", status: "Paused" } as ProviderShiftState,
  evolve: (state, event): ProviderShiftState => {
    switch (event._tag) {
      case "ProviderJoined":
        return { boardId: event.boardId, providerId: event.providerId, status: "Ready" }
      case "ProviderReady":
        return { ...state, status: "Ready" }
      case "PatientAssigned":
        return { ...state, status: "Assigned", patientId: event.patientId }
      case "ChartingStarted":
        return { ...state, status: "Charting" }
      case "ChartingFinished":
        return { ...state, status: "Paused" }
    }
  }
})

export interface CompleteCharting {
  readonly shiftId: string
  readonly version: number
}

export class NotCharting extends Schema.TaggedError<NotCharting>()("NotCharting", {
  shiftId: Schema.String,
  status: Schema.String
}) {}

/** Marten's handler, verbatim in spirit: fetch at the command's version, check, append, save. */
export const completeCharting = (command: CompleteCharting) =>
  Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForWriting(ProviderShift, command.shiftId, { expectedVersion: command.version })
    const status = Option.match(stream.aggregate, { onNone: () => "None", onSome: (s) => s.status })
    if (status !== "Charting") return yield* new NotCharting({ shiftId: command.shiftId, status })
    yield* stream.appendOne(new ChartingFinished())
    return yield* Session.saveChanges
  }))

/** The same as a decider-style handler. */
export const CompleteChartingHandler = CommandHandler.make(ProviderShift, {
  id: (command: CompleteCharting) => command.shiftId,
  expectedVersion: (command) => command.version,
  decide: (command, state) =>
    Option.match(state, {
      onNone: () => Effect.fail(new NotCharting({ shiftId: command.shiftId, status: "None" })),
      onSome: (shift) =>
        shift.status === "Charting"
          ? Effect.succeed([new ChartingFinished()])
          : Effect.fail(new NotCharting({ shiftId: command.shiftId, status: shift.status }))
    })
})
