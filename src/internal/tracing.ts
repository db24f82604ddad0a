/**
 * Spans and metrics of the public operations. A span costs only when a
 * tracer is installed: with Effect's default tracer (whose spans go nowhere)
 * an operation runs as it is, so tracing costs nothing until it is wanted.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"
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
      // No stack trace: the call site would be this line, inside the library.
      Effect.withSpan(annotated, name, { captureStackTrace: false, attributes: { "chronicle.tenant": tenant, ...attributes } }))
  })

/** @internal whether spans are being recorded (a tracer is installed). */
export const tracing: Effect.Effect<boolean> = Effect.tracerWith((tracer) => Effect.succeed(tracer !== defaultTracer))

/**
 * @internal a metric of `key` tagged with `tags` in its key, not by a wrapper:
 * Effect's `Metric.tagged` merges its tags into a new array on every update,
 * which misses the metric's hook cache and hashes the key again each time
 * (about 6 µs for a histogram); a key tagged once finds its hook once.
 */
const taggedOnce = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  tags: Record<string, string>
) => Metric.fromMetricKey(MetricKey.taggedWithLabels(key, Object.entries(tags).map(([k, v]) => MetricLabel.make(k, v))))

// One metric per tag combination (one or two tags), made the first time it is used.
const memo = <M>(make: (tags: readonly [string, string]) => M) => {
  const made = new Map<string, Map<string, M>>()
  return (first: string, second = ""): M => {
    let inner = made.get(first)
    if (inner === undefined) made.set(first, inner = new Map())
    let metric = inner.get(second)
    if (metric === undefined) inner.set(second, metric = make([first, second]))
    return metric
  }
}

const eventsAppendedKey = MetricKey.counter("chronicle_events_appended", { description: "Events appended by saves", incremental: true })
/** @internal events appended by saves, tagged by aggregate. */
export const eventsAppended = Metric.fromMetricKey(eventsAppendedKey)

const savesKey = MetricKey.counter("chronicle_saves", { description: "Saves by outcome", incremental: true })
/** @internal saves, tagged by outcome: ok | conflict | locked | deadlock | error. */
export const saves = Metric.fromMetricKey(savesKey)

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

/** @internal the saves counter of one outcome (tagged once, then reused). */
export const savesWith: (outcome: string) => Metric.Metric.Counter<number> = memo(([outcome]) => taggedOnce(savesKey, { outcome }))

/** @internal the appended-events counter of one aggregate (tagged once, then reused). */
export const appendedTo: (aggregate: string) => Metric.Metric.Counter<number> = memo(([aggregate]) =>
  taggedOnce(eventsAppendedKey, { aggregate })
)

// Milliseconds, from a quarter of a millisecond (a cached fetch) to about a
// minute (a lock waited for): doubling buckets, so a dashboard's quantiles stay within a factor of two.
const millis = MetricBoundaries.exponential({ start: 0.25, factor: 2, count: 18 })

const saveDurationKey = MetricKey.histogram("chronicle_save_duration", millis, "Duration of saves, in milliseconds")
/** @internal how long saves took, in milliseconds, tagged by aggregate and outcome. */
export const saveDuration = Metric.fromMetricKey(saveDurationKey)

const fetchDurationKey = MetricKey.histogram(
  "chronicle_fetch_duration",
  millis,
  "Duration of fetches (fetchForWriting, fetchForExclusiveWriting, fetchLatest), in milliseconds"
)
/** @internal how long fetches took, in milliseconds, tagged by aggregate and outcome. */
export const fetchDuration = Metric.fromMetricKey(fetchDurationKey)

const saveDurations = memo(([aggregate, outcome]) => taggedOnce(saveDurationKey, { aggregate, outcome }))
const fetchDurations = memo(([aggregate, outcome]) => taggedOnce(fetchDurationKey, { aggregate, outcome }))

/**
 * @internal records how long `self` took in `histogram` ("save" or "fetch"),
 * tagged by `aggregate` and its outcome (ok, or its error's `outcomeOf`, a
 * defect being an error); an interrupted operation has no outcome and is not recorded.
 */
export const timed = <A, E, R>(self: Effect.Effect<A, E, R>, histogram: "save" | "fetch", aggregate: string): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => timedIn(fiber, self, histogram, aggregate))

/**
 * @internal `timed`, from inside a step that has the fiber: recorded in the
 * step that sees the exit (no further effect), with the fiber's metric labels
 * as Metric.update would.
 */
export const timedIn = <A, E, R>(
  fiber: Fiber.RuntimeFiber<any, any>,
  self: Effect.Effect<A, E, R>,
  histogram: "save" | "fetch",
  aggregate: string
): Effect.Effect<A, E, R> => {
  const start = performance.now()
  const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
  const durations = histogram === "save" ? saveDurations : fetchDurations
  return Effect.matchCauseEffect(self, {
    onSuccess: (a) => {
      durations(aggregate, "ok").unsafeUpdate(performance.now() - start, labels)
      return Effect.succeed(a)
    },
    onFailure: (cause) => {
      const failure = Cause.failureOption(cause)
      const outcome = Option.isSome(failure) ? outcomeOf(failure.value) : Cause.isInterruptedOnly(cause) ? undefined : "error"
      if (outcome !== undefined) durations(aggregate, outcome).unsafeUpdate(performance.now() - start, labels)
      return Effect.failCause(cause)
    }
  })
}

/**
 * @internal `body` of the running fiber, in a span named `name` when a tracer
 * is installed (attributes computed only then): one step of the run loop
 * when none is.
 */
export const spanned = <A, E, R>(
  name: string,
  attributes: () => Attributes,
  after: ((a: A) => Attributes) | undefined,
  body: (fiber: Fiber.RuntimeFiber<any, any>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    records(fiber.currentTracer) ? span(Effect.withFiberRuntime(body), name, attributes(), after) : body(fiber)
  )
