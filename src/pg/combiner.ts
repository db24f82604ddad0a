/**
 * A micro-batcher of statements, for read-combining and write-combining:
 * while fewer than `maxInFlight` statements of a store are running, a request
 * goes alone, at once, in its caller's fiber; requests beyond that wait for
 * the current turn of the event loop to end and then go together, as few
 * statements as the policy takes them in, each in a fiber of its own.
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
  readonly queue: Array<W>
  inFlight: number
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
    queue: [],
    inFlight: 0,
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
  while (combiner.inFlight < combiner.maxInFlight && combiner.queue.length > 0) {
    const taken = policy.take(combiner.queue)
    combiner.inFlight++
    policy.send(taken, combiner.landed)
  }
}

/**
 * Whether a request goes alone, at once: fewer statements than the limit
 * run, and none waits.
 *
 * @since 0.1.0
 */
export const free = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>) =>
  combiner.inFlight < combiner.maxInFlight && combiner.queue.length === 0

/**
 * Runs a request alone in the caller's fiber, so that interrupting it cancels it.
 *
 * @since 0.1.0
 */
export const alone = <A, E, W extends Waiter<A, E>, X, Y, R>(combiner: Combiner<A, E, W>, effect: Effect.Effect<X, Y, R>) =>
  Effect.uninterruptibleMask((restore) => {
    combiner.inFlight++
    return Effect.ensuring(restore(effect), combiner.release)
  })

/**
 * Queues a waiter until its statement answers.
 *
 * @since 0.1.0
 */
export const enqueue = <A, E, W extends Waiter<A, E>>(combiner: Combiner<A, E, W>, waiter: W) =>
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
