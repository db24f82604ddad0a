/**
 * The command line: `migrate`, `streams list`, `streams show`, `projections
 * status`, `projections rebuild`, `daemon`, with `--database-url` (or
 * `DATABASE_URL`), `--schema` and `--tenant`. Projections and subscriptions
 * are the application's, so an application builds its own bin with its
 * registrations:
 *
 * ```ts
 * #!/usr/bin/env node
 * import { ChronicleCli } from "effect-chronicle/cli"
 * ChronicleCli.run({ registrations: [OrderSnapshot, DailyOrders, NotifyCustomer], services: MailerLive })
 * ```
 *
 * A separate entry point (`effect-chronicle/cli`): it needs `@effect/cli` and
 * `@effect/platform-node`, which the library itself never does.
 *
 * @since 0.2.0
 */
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import type * as EventStore from "./EventStore.js"
import * as Commands from "./internal/cli/commands.js"
import * as Errors from "./internal/cli/errors.js"
import * as Handlers from "./internal/cli/handlers.js"
import type * as ProjectionDaemon from "./ProjectionDaemon.js"
import * as Projections from "./Projections.js"
import type * as Subscription from "./Subscription.js"

/**
 * A projection name that names no Inline or Async projection of the registry.
 *
 * @since 0.2.0
 */
export const UnknownProjectionError = Errors.UnknownProjectionError
/** @since 0.2.0 */
export type UnknownProjectionError = Errors.UnknownProjectionError

/**
 * `streams show` of a stream with no events in the tenant.
 *
 * @since 0.2.0
 */
export const StreamNotFoundError = Errors.StreamNotFoundError
/** @since 0.2.0 */
export type StreamNotFoundError = Errors.StreamNotFoundError

/**
 * Neither `--database-url` nor `DATABASE_URL` was given (for the default PostgreSQL store).
 *
 * @since 0.2.0
 */
export const MissingDatabaseUrlError = Errors.MissingDatabaseUrlError
/** @since 0.2.0 */
export type MissingDatabaseUrlError = Errors.MissingDatabaseUrlError

/**
 * `daemon` with no Async projection and no subscription registered.
 *
 * @since 0.2.0
 */
export const NoRegistrationsError = Errors.NoRegistrationsError
/** @since 0.2.0 */
export type NoRegistrationsError = Errors.NoRegistrationsError

/**
 * What the global options say: the database URL, the schema, the tenant.
 *
 * @since 0.2.0
 */
export type Connection = Commands.Connection

/**
 * Where the commands print (standard output by default).
 *
 * @since 0.2.0
 */
export type Output = Handlers.Output

/**
 * Options of the command line.
 *
 * @since 0.2.0
 */
export type Options<Registrations extends ReadonlyArray<Projections.Registration>> =
  & BaseOptions<Registrations>
  // What the subscriptions' `handle` functions need (as for `Projections.layer`): required when they need anything.
  & ([Subscription.Context<Registrations[number]>] extends [never]
    ? { readonly services?: Layer.Layer<never, unknown> | undefined }
    : { readonly services: Layer.Layer<Subscription.Context<Registrations[number]>, unknown> })

/**
 * The options of the command line beside `services`.
 *
 * @since 0.2.0
 */
export interface BaseOptions<Registrations extends ReadonlyArray<Projections.Registration>> {
  /** The application's projections and subscriptions (none by default). */
  readonly registrations?: Registrations | undefined
  /**
   * The store, if not the PostgreSQL store the connection options name
   * (`EventStorePg.layer({ schema })` over `PgClient.layer({ url })`): for other
   * store options, or the in-memory store in tests.
   */
  readonly store?: ((connection: Connection) => Layer.Layer<EventStore.EventStore, unknown, Projections.Projections>) | undefined
  /** Options of the daemon that `daemon` runs. */
  readonly daemon?: ProjectionDaemon.Options | undefined
  /** The program's name in help and errors (default `effect-chronicle`). */
  readonly name?: string | undefined
  /** The version `--version` prints (default: effect-chronicle's). */
  readonly version?: string | undefined
  /** Where the commands print (default: standard output). */
  readonly output?: Output | undefined
}

// The library's version (package.json sits beside src/ and dist/), what `--version` prints by default.
const libraryVersion = (() => {
  try {
    return String(JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf-8")).version)
  } catch {
    return "unknown"
  }
})()

const setupOf = <R extends ReadonlyArray<Projections.Registration>>(options?: Options<R>): Commands.Setup => ({
  name: options?.name ?? "effect-chronicle",
  projections: Projections.layer(options?.registrations ?? []).pipe(
    Layer.provide(((options as { readonly services?: Layer.Layer<never, unknown> } | undefined)?.services ?? Layer.empty))
  ) as Layer.Layer<Projections.Projections, unknown>,
  store: options?.store,
  daemon: options?.daemon,
  output: options?.output ?? Handlers.stdout
})

/**
 * The command tree as an `@effect/cli` command, to mount under an
 * application's own command line.
 *
 * @since 0.2.0
 */
export const command = <const R extends ReadonlyArray<Projections.Registration> = readonly []>(options?: Options<R>) =>
  Commands.root(setupOf(options))

/**
 * The command line as a function of the process arguments (`process.argv`:
 * the node binary and script first). It fails with the first error of a
 * command (typed: the store's errors and this module's); argument errors are
 * `ValidationError`s, already printed with the usage.
 *
 * @since 0.2.0
 */
export const make = <const R extends ReadonlyArray<Projections.Registration> = readonly []>(
  options?: Options<R>
): (argv: ReadonlyArray<string>) => Effect.Effect<void, unknown, CliApp.CliApp.Environment> => {
  const setup = setupOf(options)
  return Command.run(Commands.root(setup), { name: setup.name, version: options?.version ?? libraryVersion })
}

/**
 * The error of a failed command as the bin prints it: its tag and message
 * (nothing more for argument errors, whose usage is already printed).
 *
 * @since 0.2.0
 */
export const describeFailure = (cause: Cause.Cause<unknown>): string | undefined => {
  if (Cause.isInterruptedOnly(cause)) return undefined
  const failure = Cause.failureOption(cause)
  if (failure._tag === "Some") {
    const error = failure.value
    if (ValidationError.isValidationError(error)) return undefined
    if (typeof error === "object" && error !== null && "_tag" in error) {
      const message = (error as { message?: unknown }).message
      return `${String(error._tag)}: ${typeof message === "string" && message !== "" ? message : JSON.stringify(error)}`
    }
    return String(error)
  }
  return `Defect: ${Cause.pretty(cause)}`
}

/**
 * Runs the command line on `process.argv` in Node: a failed command prints
 * its error on standard error and exits with code 1; SIGINT or SIGTERM
 * interrupt the command (the daemon then stops after its last batch) and it
 * exits with code 0.
 *
 * @since 0.2.0
 */
export const run = <const R extends ReadonlyArray<Projections.Registration> = readonly []>(options?: Options<R>): void => {
  const name = options?.name ?? "effect-chronicle"
  make(options)(process.argv).pipe(
    Effect.tapErrorCause((cause) =>
      Effect.sync(() => {
        const text = describeFailure(cause)
        if (text !== undefined) process.stderr.write(`${name}: ${text}\n`)
      })
    ),
    Effect.provide(NodeContext.layer),
    NodeRuntime.runMain({ disableErrorReporting: true })
  )
}
