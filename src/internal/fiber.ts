/**
 * Steps of the hot path that cost one step of the fiber's run loop where the
 * combinators they replace cost several: the one module of `src/internal`
 * that uses a method of Effect 3's fiber runtime that its `RuntimeFiber`
 * interface does not list (`setFiberRef`). A port to Effect 4 changes this
 * module; test/fiber.test.ts fails when an upgrade moves it.
 *
 * Why: `Effect.provideService` is a `FiberRef` locally set and restored
 * through `acquireUseRelease` (about fifteen steps and a copy of the context
 * each way), `Effect.ensuring` a region of its own, and a `Tag` read three
 * steps; a session's run takes each of them once per call.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"

type Settable = { readonly setFiberRef: <A>(ref: FiberRef.FiberRef<A>, value: A) => void }

/** @internal sets a FiberRef of the running fiber, from inside `Effect.withFiberRuntime`. */
export const unsafeSet = <A>(fiber: Fiber.RuntimeFiber<any, any>, ref: FiberRef.FiberRef<A>, value: A): void =>
  (fiber as unknown as Settable).setFiberRef(ref, value)

/** @internal `f` of a service of the fiber's context, in one step (a missing service is a defect, as with the tag). */
export const withService = <I, S, A, E, R>(
  tag: Context.Tag<I, S>,
  f: (service: S) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R | I> => Effect.withFiberRuntime((fiber) => f(Context.unsafeGet(fiber.currentContext as Context.Context<I>, tag)))

/**
 * @internal runs `self` with `tag` in its context as the service `make`
 * builds from the context (once per run), then `release` of it (an effect, or
 * undefined for nothing to do), whatever the exit: an interruption included,
 * as with `Effect.ensuring`. One region and one continuation where
 * `Effect.ensuring(Effect.provideService(...))` takes a dozen steps.
 */
export const provideScoped = <I, S, A, E, R, X>(
  self: Effect.Effect<A, E, R>,
  tag: Context.Tag<I, S>,
  make: (context: Context.Context<never>) => { readonly service: S; readonly handle: X },
  release: (handle: X) => Effect.Effect<void> | undefined
): Effect.Effect<A, E, Exclude<R, I>> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.withFiberRuntime<A, E, Exclude<R, I>>((fiber) => {
      const outer = fiber.currentContext
      const { handle, service } = make(outer)
      unsafeSet(fiber, FiberRef.currentContext, Context.add(outer, tag, service))
      return Effect.matchCauseEffect(restore(self) as Effect.Effect<A, E, Exclude<R, I>>, {
        onFailure: (cause) => {
          unsafeSet(fiber, FiberRef.currentContext, outer)
          const released = release(handle)
          return released === undefined
            ? Effect.failCause(cause)
            : Effect.matchCauseEffect(released, {
              onFailure: (second) => Effect.failCause(Cause.sequential(cause, second)),
              onSuccess: () => Effect.failCause(cause)
            })
        },
        onSuccess: (a) => {
          unsafeSet(fiber, FiberRef.currentContext, outer)
          const released = release(handle)
          return released === undefined ? Effect.succeed(a) : Effect.as(released, a)
        }
      })
    })
  )

/**
 * @internal `Effect.provideService`, in one region and one continuation
 * instead of a `FiberRef` locally set through `acquireUseRelease`.
 */
export const provideService = <I, S, A, E, R>(
  self: Effect.Effect<A, E, R>,
  tag: Context.Tag<I, S>,
  service: S
): Effect.Effect<A, E, Exclude<R, I>> => provideScoped(self, tag, () => ({ service, handle: undefined }), none)
const none = (): undefined => undefined
