/**
 * The typed failures of effect-chronicle. All are `Schema.TaggedError`s, so they
 * serialise across process boundaries (RPC, workers) with their fields intact.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The stream was at another version than the writer expected: someone else
 * wrote to it first. `actualVersion` is the version found in the store.
 *
 * @since 0.1.0
 */
export class ConcurrencyError extends Schema.TaggedError<ConcurrencyError>()("ConcurrencyError", {
  streamId: Schema.String,
  expectedVersion: Schema.Number,
  actualVersion: Schema.Number
}) {
  get message(): string {
    return `Stream "${this.streamId}" is at version ${this.actualVersion}, expected ${this.expectedVersion}`
  }
}

/**
 * An exclusive fetch could not take the stream's lock before its time-out.
 *
 * @since 0.1.0
 */
export class StreamLockedError extends Schema.TaggedError<StreamLockedError>()("StreamLockedError", {
  streamId: Schema.String,
  timeoutMillis: Schema.Number
}) {
  get message(): string {
    return `Stream "${this.streamId}" stayed locked by another session for ${this.timeoutMillis} ms`
  }
}

/**
 * Two sessions each waited for a lock the other holds; the store broke the
 * cycle by failing this one (PostgreSQL's 40P01, or the in-memory store's
 * wait-for check). Nothing of this session was written: retry it, as
 * `CommandHandler` and `writeToAggregate` do.
 *
 * @since 0.2.0
 */
export class DeadlockError extends Schema.TaggedError<DeadlockError>()("DeadlockError", {
  streamIds: Schema.Array(Schema.String)
}) {
  get message(): string {
    return `Deadlock: this session and another each waited for a lock the other held (streams ${
      this.streamIds.map((id) => JSON.stringify(id)).join(", ")
    }); nothing was written, retry the command`
  }
}

/**
 * The stream is archived (`Session.archiveStream`): it can still be read, but
 * no longer fetched for writing or appended to. Nothing of the failing save
 * was written; retrying cannot help, so the command workflow does not.
 *
 * @since 0.2.0
 */
export class StreamArchivedError extends Schema.TaggedError<StreamArchivedError>()("StreamArchivedError", {
  streamId: Schema.String
}) {
  get message(): string {
    return `Stream "${this.streamId}" is archived: it can be read but not written to`
  }
}

/**
 * `startStream` was asked to create a stream whose id is already taken.
 *
 * @since 0.1.0
 */
export class StreamExistsError extends Schema.TaggedError<StreamExistsError>()("StreamExistsError", {
  streamId: Schema.String
}) {
  get message(): string {
    return `Stream "${this.streamId}" already exists`
  }
}

/**
 * A stored event could not be decoded with the aggregate's event Schema: its
 * type is unknown, or its payload is rejected.
 *
 * @since 0.1.0
 */
export class EventDecodeError extends Schema.TaggedError<EventDecodeError>()("EventDecodeError", {
  streamId: Schema.String,
  version: Schema.Number,
  eventType: Schema.String,
  message: Schema.String
}) {}

/**
 * An event handed to `append` was rejected by the aggregate's event Schema
 * when it was encoded for storage; nothing of the save was written.
 *
 * @since 0.1.0
 */
export class EventEncodeError extends Schema.TaggedError<EventEncodeError>()("EventEncodeError", {
  streamId: Schema.String,
  eventType: Schema.String,
  message: Schema.String
}) {}

/**
 * A storage failure. Wraps the driver's error (`SqlError`) so that it never
 * leaks raw into a user's error channel.
 *
 * @since 0.1.0
 */
export class EventStoreError extends Schema.TaggedError<EventStoreError>()("EventStoreError", {
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * A stream id that cannot name a stream: not a string, empty, too long, or
 * holding a character PostgreSQL text cannot store.
 *
 * @since 0.1.0
 */
export class InvalidStreamIdError extends Schema.TaggedError<InvalidStreamIdError>()("InvalidStreamIdError", {
  streamId: Schema.Unknown,
  reason: Schema.String
}) {
  get message(): string {
    return `Invalid stream id ${JSON.stringify(this.streamId)}: ${this.reason}`
  }
}

/**
 * An expected version that no stream can have (negative, fractional, not a number).
 *
 * @since 0.1.0
 */
export class InvalidExpectedVersionError
  extends Schema.TaggedError<InvalidExpectedVersionError>()("InvalidExpectedVersionError", {
    streamId: Schema.String,
    expectedVersion: Schema.Unknown
  })
{
  get message(): string {
    return `Invalid expected version ${String(this.expectedVersion)} for stream "${this.streamId}": ` +
      `it must be a whole number >= 0`
  }
}

/**
 * An option no store can honour: a lock time-out that is infinite, NaN,
 * negative or at least 2^31 ms (PostgreSQL's limit), or a PostgreSQL schema
 * name that is not a plain identifier. Raised where the option is given (the
 * call, or the store layer's construction); nothing is written.
 *
 * @since 0.2.0
 */
export class InvalidOptionError extends Schema.TaggedError<InvalidOptionError>()("InvalidOptionError", {
  option: Schema.String,
  value: Schema.Unknown,
  reason: Schema.String
}) {
  get message(): string {
    return `Invalid option ${this.option} (${String(this.value)}): ${this.reason}`
  }
}

/**
 * A tenant id that cannot name a tenant: not a string, empty or blank, too
 * long, or holding a character PostgreSQL text cannot store (NUL, a lone
 * UTF-16 surrogate). Nothing is run, so nothing is written.
 *
 * @since 0.2.0
 */
export class InvalidTenantIdError extends Schema.TaggedError<InvalidTenantIdError>()("InvalidTenantIdError", {
  tenantId: Schema.Unknown,
  reason: Schema.String
}) {
  get message(): string {
    return `Invalid tenant id ${JSON.stringify(this.tenantId)}: ${this.reason}`
  }
}
