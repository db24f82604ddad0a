/**
 * The command line's own errors (beside the store's): typed, so that a script
 * can tell them apart, and each with a message that says what to do.
 *
 * @internal
 */
import * as Schema from "effect/Schema"

/** @internal a projection name the application did not register (or registered Live: nothing is stored). */
export class UnknownProjectionError extends Schema.TaggedError<UnknownProjectionError>()("UnknownProjectionError", {
  name: Schema.String,
  version: Schema.optional(Schema.Number),
  known: Schema.Array(Schema.String)
}) {
  get message(): string {
    const which = this.version === undefined ? `"${this.name}"` : `"${this.name}" version ${this.version}`
    return this.known.length === 0
      ? `No projection ${which} is registered: this command line has no registrations. ` +
        `Projections and subscriptions are the application's: build your own bin with ` +
        `ChronicleCli.run({ registrations: [...] }) from "effect-chronicle/cli"`
      : `No Inline or Async projection ${which} is registered (known: ${this.known.join(", ")})`
  }
}

/** @internal a stream with no events in the tenant. */
export class StreamNotFoundError extends Schema.TaggedError<StreamNotFoundError>()("StreamNotFoundError", {
  streamId: Schema.String,
  tenantId: Schema.String
}) {
  get message(): string {
    return `No stream "${this.streamId}" in tenant "${this.tenantId}"`
  }
}

/** @internal neither `--database-url` nor `DATABASE_URL`. */
export class MissingDatabaseUrlError extends Schema.TaggedError<MissingDatabaseUrlError>()("MissingDatabaseUrlError", {}) {
  get message(): string {
    return "No database: pass --database-url postgres://... or set DATABASE_URL"
  }
}

/** @internal a daemon asked to run with nothing to run. */
export class NoRegistrationsError extends Schema.TaggedError<NoRegistrationsError>()("NoRegistrationsError", {}) {
  get message(): string {
    return "No Async projection or subscription is registered, so the daemon would have nothing to run. " +
      "Projections and subscriptions are the application's: build your own bin with " +
      "ChronicleCli.run({ registrations: [...] }) from \"effect-chronicle/cli\""
  }
}
