/**
 * A micro-batcher of statements, for read-combining and write-combining:
 * while fewer than `maxInFlight` statements of a store are running, a request
 * goes alone, at once, in its caller's fiber; requests beyond that wait for
 * the current turn of the event loop to end and then go together, as few
 * statements as the policy takes them in, each in a fiber of its own, at
 * most `maxQueuedInFlight` of them at once; while any runs, newcomers queue.
 *
 * What a combined statement means (which requests share one, what each
 * resumes with, what a failure does) is its policy's; the combiner keeps the
 * queue, the statements in flight and the waiters' interruption: a waiter
 * interrupted while queued leaves the queue, and once taken it cancels only a
 * statement of its own (the policy's `cancel`), never a shared one.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import * as Tracer from "effect/Tracer"
import * as Tracing from "../internal/tracing.js"
import { currentStatementObserver } from "./spans.js"

/**
 * How many statements that serve queued requests a store runs at once, for
 * reads and for saves: one can take the queue while the other runs.
 *
 * @since 0.2.0
 */
export const maxQueuedInFlight = 2

/**
 * A request waiting to be sent; policies extend it with what they send.
 *
 * @since 0.1.0
 */
export interface Waiter<A, E> {
  /** How it resumes, set once it is queued. */
  resume: (effect: Effect.Effect<A, E>) => void
  /** Interrupted: nothing waits for its answer any more. */
  gone: boolean
  /** Cancels the statement it was taken into, where that statement is its own. */
  cancel: (() => void) | undefined
  /** The tracer and span it waits in, when a tracer is installed. */
  trace?: Trace | undefined
}

/**
 * Where a waiter's request was made, for the spans of the statement that serves it.
 *
 * @since 0.2.0
 */
export interface Trace {
  readonly tracer: Tracer.Tracer
  readonly span: Tracer.AnySpan | undefined
}

/**
 * The resume of a waiter not queued yet.
 *
 * @since 0.1.0
 */
export const unqueued = (): void => {}

/**
 * How the queued requests go out.
 *
 * @since 0.1.0
 */
export interface Policy<W> {
  /** How many statements run at once before requests wait to be combined. */
  readonly maxInFlight: number
  /**
   * How many of those may serve queued requests (default `maxInFlight`):
   * fewer, larger combined statements once requests queue.
   */
  readonly maxQueuedInFlight?: number | undefined
  /** Takes the waiters one statement serves out of the queue (never empty). */
  readonly take: (queue: Array<W>) => Array<W>
  /**
   * Sends one statement for `taken`, in fibers of its own; once it has ended,
   * calls `landed` (which gives its slot back), then resumes the waiters.
   */
  readonly send: (taken: Array<W>, landed: () => void) => void
}

/**
 * The requests of one store waiting to be combined, and its statements in flight.
 *
 * @since 0.1.0
 */
export interface Combiner<A, E, W extends Waiter<A, E>> {
  readonly maxInFlight: number
  readonly maxQueuedInFlight: number
  readonly queue: Array<W>
  inFlight: number
  /** The statements in flight that serve queued requests. */
  queuedInFlight: number
  /** Flushes once the current turn of the event loop is over, while requests wait. */
  readonly schedule: () => void
  /** Gives a statement's slot back, and flushes what waits for it. */
  readonly landed: () => void
  /** `landed`, as an effect. */
  readonly release: Effect.Effect<void>
}

/**
 * A combiner with a policy.
 *
 * @since 0.1.0
 */
export const make = <A, E, W extends Waiter<A, E>>(policy: Policy<W>): Combiner<A, E, W> => {
  const landed = () => {
    combiner.inFlight--
    combiner.schedule()
  }
  const combiner: Combiner<A, E, W> = {
    maxInFlight: policy.maxInFlight,
    maxQueuedInFlight: policy.maxQueuedInFlight ?? policy.maxInFlight,
    queue: [],
    inFlight: 0,
    queuedInFlight: 0,
    // Queued requests go out once the current turn of the event loop is over,
    // so that every request that arrived in it joins the same statement.
    schedule: afterThisTurn(() => combiner.queue.length > 0, () => flush(combiner, policy)),
    landed,
    release: Effect.sync(landed)
  }
  return combiner
}

// Schedules `flush` once, after the current turn of the event loop, while `waiting()`:
// every request that arrives in that turn joins the same flush.
const afterThisTurn = (waiting: () => boolean, flush: () => void) => {
  let scheduled = false
  return () => {
    if (scheduled || !waiting()) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      flush()
    })
  }
}

const flush = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>, policy: Policy<W>) => {
  while (
    combiner.inFlight < combiner.maxInFlight && combiner.queuedInFlight < combiner.maxQueuedInFlight &&
    combiner.queue.length > 0
  ) {
    const taken = policy.take(combiner.queue)
    combiner.inFlight++
    combiner.queuedInFlight++
    policy.send(taken, landedQueued(combiner))
  }
}

// The slot of a statement that served queued requests: given back once.
const landedQueued = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>) => {
  let landed = false
  return () => {
    if (landed) return
    landed = true
    combiner.queuedInFlight--
    combiner.landed()
  }
}

/**
 * Whether a request goes alone, at once: fewer statements than the limit
 * run, none waits, and none serves queued requests. Once requests queue,
 * newcomers queue behind the statements that serve them until those have
 * drained: they then go out as a few large statements rather than as many
 * small ones (measured at 64 writers on one store, commands to the same
 * streams: 10–25% more throughput and a fifth less Node CPU per command than
 * letting newcomers take free slots alone; no change at 8 or 16 writers).
 *
 * @since 0.1.0
 */
export const free = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>) =>
  combiner.inFlight < combiner.maxInFlight && combiner.queue.length === 0 && combiner.queuedInFlight === 0

/**
 * Runs a request alone in the caller's fiber, so that interrupting it cancels it.
 *
 * @since 0.1.0
 */
export const alone = <A, E, W extends Waiter<A, E>, X, Y, R>(combiner: Combiner<A, E, W>, effect: Effect.Effect<X, Y, R>) =>
  // The slot is given back in the step that sees the exit, whatever it is (one region, no finalizer effect).
  Effect.uninterruptibleMask((restore) => {
    combiner.inFlight++
    return Effect.matchCauseEffect(restore(effect), {
      onFailure: (cause) => {
        combiner.landed()
        return Effect.failCause(cause)
      },
      onSuccess: (x) => {
        combiner.landed()
        return Effect.succeed(x)
      }
    })
  })

/**
 * Queues a waiter until its statement answers.
 *
 * @since 0.1.0
 */
export const enqueue = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>, waiter: W) =>
  Effect.withFiberRuntime<A, E>((fiber) => {
    const tracer = fiber.currentTracer
    if (Tracing.records(tracer)) waiter.trace = { tracer, span: fiber.currentSpan }
    return queued(combiner, waiter)
  })

const queued = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>, waiter: W) =>
  Effect.async<A, E>((resume) => {
    waiter.resume = resume
    combiner.queue.push(waiter)
    combiner.schedule()
    return Effect.sync(() => {
      waiter.gone = true
      const i = combiner.queue.indexOf(waiter)
      if (i >= 0) combiner.queue.splice(i, 1)
      else waiter.cancel?.()
    })
  })

/**
 * The statement that serves `taken`, traced as its waiters were: with one
 * waiter, in that waiter's span; shared by several, in a trace of its own
 * (it is no one waiter's child), each statement span it opens marked with how
 * many it serves and linked to each waiter's span, and each waiter's span
 * marked combined and linked to the statement's.
 *
 * @since 0.2.0
 */
export const traced = <A, E, R>(taken: ReadonlyArray<{ readonly trace?: Trace | undefined }>, statement: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  let trace: Trace | undefined
  for (const waiter of taken) if ((trace = waiter.trace) !== undefined) break
  if (trace === undefined) return statement
  if (taken.length === 1) {
    return Effect.withTracer(trace.span === undefined ? statement : Effect.withParentSpan(statement, trace.span), trace.tracer)
  }
  const waiting: Array<Tracer.AnySpan> = []
  for (const waiter of taken) if (waiter.trace?.span !== undefined) waiting.push(waiter.trace.span)
  const observe = (span: Tracer.Span) => {
    span.attribute("chronicle.combined", taken.length)
    span.addLinks(waiting.map((waiter) => ({ _tag: "SpanLink" as const, span: waiter, attributes: { "chronicle.link": "waiter" } })))
    for (const waiter of waiting) {
      if (waiter._tag !== "Span") continue
      waiter.attribute("chronicle.combined", true)
      waiter.attribute("chronicle.combined_with", taken.length)
      waiter.addLinks([{ _tag: "SpanLink", span, attributes: { "chronicle.link": "combined statement" } }])
    }
  }
  return Effect.withTracer(
    Effect.locally(
      Effect.mapInputContext(statement, (ctx: Context.Context<R>) => Context.omit(Tracer.ParentSpan)(ctx) as Context.Context<R>),
      currentStatementObserver,
      observe
    ),
    trace.tracer
  )
}
