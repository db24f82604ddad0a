/**
 * Saving a unit of work: encoding its pending appends into one commit batch,
 * planning its Inline projections, committing, and turning the storage's
 * answer into a `SaveResult` or a typed error.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Cause from "effect/Cause"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import { ConcurrencyError, DeadlockError, EventEncodeError, StreamArchivedError, StreamExistsError } from "../Errors.js"
import type { EventMetadata } from "../EventEnvelope.js"
import type * as Projections from "../Projections.js"
import type { SaveError, SaveResult } from "../Session.js"
import type * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"
import * as Inline from "./inline.js"
import * as Tracing from "./tracing.js"
import { textProblem } from "./input.js"
import * as UnitOfWork from "./unitOfWork.js"

// Metadata (`EventStore.withMetadata`) is held to the rules of payloads, so
// that what PostgreSQL would refuse or change fails the same on both stores.
const metadataJson = (metadata: EventMetadata): Either.Either<EventMetadata, string> => {
  const { causationId, correlationId, headers } = metadata
  const idProblem = metadataIdProblem("correlationId", correlationId) ?? metadataIdProblem("causationId", causationId)
  if (idProblem !== undefined) return Either.left(idProblem)
  if (headers === undefined) return Either.right(metadata)
  if (headers === null || typeof headers !== "object" || Array.isArray(headers)) {
    return Either.left(`metadata: headers must be an object, got ${headers === null ? "null" : Array.isArray(headers) ? "an array" : typeof headers}`)
  }
  const json = Aggregate.toJson(headers)
  if (Either.isLeft(json)) return Either.left(`metadata: ${json.left.replace(/^\$/, "headers")}`)
  return Either.right(json.right === headers ? metadata : { ...metadata, headers: json.right as Record<string, unknown> })
}

const metadataIdProblem = (name: string, id: unknown): string | undefined => {
  if (id === undefined) return undefined
  if (typeof id !== "string") return `metadata: ${name} must be a string, got ${id === null ? "null" : typeof id}`
  const problem = textProblem(id)
  return problem === undefined ? undefined : `metadata: ${name} holds ${problem}, which PostgreSQL cannot store`
}

/** @internal the pending actions as one tenant's commit batch, or the first event that cannot be stored. */
export const encodeBatch = (
  tenantId: string,
  entries: ReadonlyArray<UnitOfWork.Pending>
): Either.Either<Storage.CommitBatch, EventEncodeError> => {
  const streams: Array<Storage.StreamWrite> = []
  // Events appended together share one metadata object: checked once.
  let checked: EventMetadata | undefined
  let checkedAs: EventMetadata | undefined
  for (const entry of entries) {
    const events: Array<Storage.NewEvent> = []
    for (let i = 0; i < entry.events.length; i++) {
      const { aggregate, event } = entry.events[i]
      const encoded = aggregate.codec.encode(event)
      if (Either.isLeft(encoded)) {
        return Either.left(
          new EventEncodeError({ streamId: entry.streamId, eventType: Envelope.tagOf(event), message: encoded.left })
        )
      }
      let metadata = entry.events[i].metadata
      if (metadata !== checked) {
        const json = metadataJson(metadata)
        if (Either.isLeft(json)) {
          return Either.left(
            new EventEncodeError({ streamId: entry.streamId, eventType: Envelope.tagOf(event), message: json.left })
          )
        }
        checked = metadata
        checkedAs = json.right
      }
      if (checkedAs !== metadata) {
        // Normalised (-0 in a header): the envelopes carry what is stored.
        metadata = checkedAs!
        entry.events[i] = { ...entry.events[i], metadata }
      }
      events.push({ type: encoded.right.type, data: encoded.right.data, metadata })
    }
    streams.push({
      streamId: entry.streamId,
      aggregateType: entry.aggregate.name,
      expected: entry.expected,
      events
    })
  }
  return Either.right({ tenantId, streams })
}

const conflictError = (
  saving: ReadonlyMap<string, UnitOfWork.Pending>,
  conflict: Storage.Conflict
): ConcurrencyError | StreamExistsError | StreamArchivedError =>
  conflict.archived === true
    ? new StreamArchivedError({ streamId: conflict.streamId })
    : saving.get(conflict.streamId)?.mode === "start"
    ? new StreamExistsError({ streamId: conflict.streamId })
    : new ConcurrencyError({
      streamId: conflict.streamId,
      expectedVersion: conflict.expected,
      actualVersion: conflict.actual
    })

/** @internal what a save needs from its session. */
export interface Deps {
  readonly storage: Storage.Storage
  readonly registry: Projections.Registry
  readonly uow: UnitOfWork.UnitOfWork
  readonly knownAt: Inline.KnownAt
}

const resultOf = (result: Extract<Storage.CommitResult, { _tag: "Committed" }>): SaveResult => ({
  streams: result.streams.map((s) => ({
    streamId: s.streamId,
    previousVersion: s.previousVersion,
    version: s.version,
    sequences: s.events.map((e) => e.sequence)
  }))
})

/**
 * @internal commits one tenant's pending actions, in `target` (the session's
 * transaction) or alone, and folds what was saved into the identity map.
 */
export const save = (
  deps: Deps,
  target: Storage.Transaction | undefined,
  saving: ReadonlyMap<string, UnitOfWork.Pending>,
  tenantId: string,
  archiving: ReadonlyArray<string> = [],
  labels: ReadonlyArray<MetricLabel.MetricLabel> = []
): Effect.Effect<SaveResult, SaveError> => {
  const entries = Array.from(saving.values()).filter(UnitOfWork.hasWork)
  const encoded = encodeBatch(tenantId, entries)
  if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
  // Archiving comes after the events, in the same commit: "append the last event and archive" is one save.
  const batch: Storage.CommitBatch = archiving.length === 0 ? encoded.right : { ...encoded.right, archive: archiving }
  if (entries.length === 0 && archiving.length === 0) {
    return target === undefined ? Effect.succeed({ streams: [] }) : Effect.as(target.commit(batch), { streams: [] })
  }
  const plan = Inline.plan(deps.registry, entries, batch, deps.knownAt)
  if (Either.isLeft(plan)) return Effect.fail(plan.left)
  const { computed, documents, inline } = plan.right
  // The counters are updated in the step that sees the outcome, with the fiber's labels, as Metric.update would.
  return Effect.matchCauseEffect((target ?? deps.storage).commit({ ...batch, documents, inline }), {
    onFailure: (cause) => {
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure)) Tracing.savesWith(Tracing.outcomeOf(failure.value)).unsafeUpdate(1, labels)
      return Effect.failCause(cause)
    },
    onSuccess: (result): Effect.Effect<SaveResult, SaveError> => {
      if (result._tag === "Conflicted" || result._tag === "Deadlocked") {
        const error = result._tag === "Conflicted"
          ? conflictError(saving, result.conflicts[0])
          : new DeadlockError({ streamIds: result.streamIds })
        Tracing.savesWith(Tracing.outcomeOf(error)).unsafeUpdate(1, labels)
        return Effect.fail(error)
      }
      Tracing.savesWith("ok").unsafeUpdate(1, labels)
      for (const committed of result.streams) {
        const entry = saving.get(committed.streamId)
        if (entry !== undefined) {
          UnitOfWork.remember(deps.uow, entry, committed, tenantId, computed.get(committed.streamId) ?? result.states?.get(committed.streamId))
          if (committed.events.length > 0) Tracing.appendedTo(entry.aggregate.name).unsafeUpdate(committed.events.length, labels)
        }
      }
      return Effect.succeed(resultOf(result))
    }
  })
}
