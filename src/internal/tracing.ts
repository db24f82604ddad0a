/**
 * Spans and metrics of the public operations. A span costs only when a
 * tracer is installed: with Effect's default tracer (whose spans go nowhere)
 * an operation runs as it is, so tracing costs nothing until it is wanted.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { currentTenant } from "./store.js"

// The tracer of a program that installed none.
const defaultTracer: Tracer.Tracer = Effect.runSync(Effect.tracer)

/** @internal whether `tracer` records spans (it is not Effect's default one, whose spans go nowhere). */
export const records = (tracer: Tracer.Tracer): boolean => tracer !== defaultTracer

/** @internal the attributes of an operation's span. */
export type Attributes = Record<string, unknown>

/** @internal the tag of an error, when it has one. */
export const tagOf = (error: unknown): string | undefined =>
  error !== null && typeof error === "object" && typeof (error as { _tag?: unknown })._tag === "string"
    ? (error as { _tag: string })._tag
    : undefined

/**
 * @internal runs `self` in a span named `name` when a tracer is installed. A
 * failure ends the span failed, with the error's tag as `error.type`; `after`
 * adds attributes known once the operation succeeded.
 */
export const span = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  attributes: Attributes,
  after?: (a: A) => Attributes
): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) => {
    if (tracer === defaultTracer) return self
    const annotated = Effect.tapErrorCause(
      after === undefined ? self : Effect.tap(self, (a) => Effect.annotateCurrentSpan(after(a))),
      (cause) => {
        const failure = cause._tag === "Fail" ? tagOf(cause.error) : undefined
        return failure === undefined ? Effect.void : Effect.annotateCurrentSpan("error.type", failure)
      }
    )
    return Effect.flatMap(FiberRef.get(currentTenant), (tenant) =>
      Effect.withSpan(annotated, name, { attributes: { "chronicle.tenant": tenant, ...attributes } }))
  })

/** @internal whether spans are being recorded (a tracer is installed). */
export const tracing: Effect.Effect<boolean> = Effect.tracerWith((tracer) => Effect.succeed(tracer !== defaultTracer))

/** @internal events appended by saves, tagged by aggregate. */
export const eventsAppended = Metric.counter("chronicle_events_appended", {
  description: "Events appended by saves",
  incremental: true
})

/** @internal saves, tagged by outcome: ok | conflict | locked | deadlock | error. */
export const saves = Metric.counter("chronicle_saves", { description: "Saves by outcome", incremental: true })

/** @internal command attempts after the first (a conflict or deadlock retried). */
export const commandRetries = Metric.counter("chronicle_command_retries", {
  description: "Command attempts after the first",
  incremental: true
})

/** @internal the outcome a save's error stands for. */
export const outcomeOf = (error: unknown): "conflict" | "locked" | "deadlock" | "error" => {
  switch (tagOf(error)) {
    case "ConcurrencyError":
    case "StreamExistsError":
      return "conflict"
    case "StreamLockedError":
      return "locked"
    case "DeadlockError":
      return "deadlock"
    default:
      return "error"
  }
}

const byOutcome = new Map<string, Metric.Metric.Counter<number>>()
/** @internal the saves counter of one outcome (tagged once, then reused). */
export const savesWith = (outcome: string): Metric.Metric.Counter<number> => {
  let metric = byOutcome.get(outcome)
  if (metric === undefined) byOutcome.set(outcome, metric = Metric.tagged(saves, "outcome", outcome))
  return metric
}

const byAggregate = new Map<string, Metric.Metric.Counter<number>>()
/** @internal the appended-events counter of one aggregate (tagged once, then reused). */
export const appendedTo = (aggregate: string): Metric.Metric.Counter<number> => {
  let metric = byAggregate.get(aggregate)
  if (metric === undefined) byAggregate.set(aggregate, metric = Metric.tagged(eventsAppended, "aggregate", aggregate))
  return metric
}

// Milliseconds, from a quarter of a millisecond (a cached fetch) to about a
// minute (a lock waited for): doubling buckets, so a dashboard's quantiles stay within a factor of two.
const millis = MetricBoundaries.exponential({ start: 0.25, factor: 2, count: 18 })

/** @internal how long saves took, in milliseconds, tagged by aggregate and outcome. */
export const saveDuration = Metric.histogram("chronicle_save_duration", millis, "Duration of saves, in milliseconds")

/** @internal how long fetches took, in milliseconds, tagged by aggregate and outcome. */
export const fetchDuration = Metric.histogram(
  "chronicle_fetch_duration",
  millis,
  "Duration of fetches (fetchForWriting, fetchForExclusiveWriting, fetchLatest), in milliseconds"
)

type Histogram = Metric.Metric<MetricKeyType.MetricKeyType.Histogram, number, MetricState.MetricState.Histogram>

const durations = new Map<string, Histogram>()
const durationOf = (base: Histogram, key: string, aggregate: string, outcome: string): Histogram => {
  const name = `${key}\u0000${aggregate}\u0000${outcome}`
  let metric = durations.get(name)
  if (metric === undefined) {
    durations.set(name, metric = base.pipe(Metric.tagged("aggregate", aggregate), Metric.tagged("outcome", outcome)))
  }
  return metric
}

/**
 * @internal records how long `self` took in `histogram` ("save" or "fetch"),
 * tagged by `aggregate` and its outcome (ok, or its error's `outcomeOf`, a
 * defect being an error); an interrupted operation has no outcome and is not recorded.
 */
export const timed = <A, E, R>(self: Effect.Effect<A, E, R>, histogram: "save" | "fetch", aggregate: string): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.onExit(self, (exit) => {
      let outcome: string
      if (Exit.isSuccess(exit)) outcome = "ok"
      else {
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure)) outcome = outcomeOf(failure.value)
        else if (Cause.isInterruptedOnly(exit.cause)) return Effect.void
        else outcome = "error"
      }
      const base = histogram === "save" ? saveDuration : fetchDuration
      return Metric.update(durationOf(base, histogram, aggregate, outcome), performance.now() - start)
    })
  })
