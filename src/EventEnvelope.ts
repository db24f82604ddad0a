/**
 * The envelope an event travels in once stored: its place in its stream and in
 * the global log, and its metadata.
 *
 * @since 0.1.0
 */

/**
 * A stored event with its position and metadata. `version` is 1-based within
 * the stream; `sequence` is the position in the global log.
 *
 * @since 0.1.0
 */
export interface EventEnvelope<E> {
  readonly streamId: string
  readonly version: number
  readonly sequence: number
  readonly type: string
  readonly data: E
  readonly timestamp: Date
  readonly tenantId: string
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly headers: Readonly<Record<string, unknown>>
}

/**
 * The metadata attached to appended events (see `EventStore.withMetadata`).
 *
 * @since 0.1.0
 */
export interface EventMetadata {
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly headers?: Readonly<Record<string, unknown>> | undefined
}
