/**
 * effect-chronicle: a functional event store for TypeScript, built on Effect
 * and PostgreSQL.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Aggregate from "./Aggregate.js"
/** @since 0.2.0 */
export * as ChronicleTest from "./ChronicleTest.js"
/** @since 0.1.0 */
export * as CommandHandler from "./CommandHandler.js"
/** @since 0.1.0 */
export * as Errors from "./Errors.js"
/** @since 0.1.0 */
export * as EventEnvelope from "./EventEnvelope.js"
/** @since 0.1.0 */
export * as EventStore from "./EventStore.js"
/** @since 0.1.0 */
export * as EventStoreMemory from "./EventStoreMemory.js"
/** @since 0.1.0 */
export * as EventStorePg from "./EventStorePg.js"
/** @since 0.1.0 */
export * as Projection from "./Projection.js"
/** @since 0.1.0 */
export * as ProjectionDaemon from "./ProjectionDaemon.js"
/** @since 0.1.0 */
export * as Projections from "./Projections.js"
/** @since 0.2.0 */
export * as ProjectionStorage from "./ProjectionStorage.js"
/** @since 0.1.0 */
export * as Session from "./Session.js"
/** @since 0.1.0 */
export * as Storage from "./Storage.js"
/** @since 0.1.0 */
export * as StreamId from "./StreamId.js"
/** @since 0.2.0 */
export * as Subscription from "./Subscription.js"

// The errors are also exported by name, so `catchTag` users can import them directly.
export {
  ConcurrencyError,
  DeadlockError,
  EventDecodeError,
  EventEncodeError,
  EventStoreError,
  InvalidExpectedVersionError,
  InvalidOptionError,
  InvalidStreamIdError,
  InvalidTenantIdError,
  StreamArchivedError,
  StreamExistsError,
  StreamLockedError
} from "./Errors.js"
export type { EventEnvelope as Envelope, EventMetadata } from "./EventEnvelope.js"
