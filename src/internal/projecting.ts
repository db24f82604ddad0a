/**
 * Folding events into projection documents: snapshots (one per stream) and
 * multi-stream views (one per key). Inline saves and the daemon both project
 * through here, so a document comes out the same whoever wrote it.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Aggregate from "../Aggregate.js"
import { EventStoreError } from "../Errors.js"
import type { EventEnvelope } from "../EventEnvelope.js"
import type * as Projection from "../Projection.js"
import type * as Storage from "../Storage.js"
import * as Envelope from "./envelope.js"

const failure = (message: string) => new EventStoreError({ message })

/** @internal one key per document: projection, its version, tenant and id. */
export const documentKey = (ref: Storage.DocumentRef): string =>
  `${ref.projection}\u0000${ref.projectionVersion}\u0000${ref.tenantId}\u0000${ref.id}`

/** @internal documents by their key. */
export const byKey = (docs: ReadonlyArray<Storage.StoredDocument>): Map<string, Storage.StoredDocument> =>
  new Map(docs.map((d) => [documentKey(d), d]))

/** @internal the state a stored snapshot holds, or the error that it no longer decodes. */
export const snapshotState = (
  aggregate: Aggregate.Any,
  doc: Storage.StoredDocument
): Either.Either<unknown, EventStoreError> =>
  Either.mapLeft(
    Aggregate.stateCodec(aggregate)!.decode(doc.data),
    (message) => failure(`Projection ${aggregate.name}: snapshot of "${doc.id}" does not decode: ${message}`)
  )

/** @internal the write of a snapshot document of `state` at `streamVersion` (null data for no state). */
export const snapshotWrite = (
  projection: { readonly name: string; readonly version: number },
  aggregate: Aggregate.Any,
  ref: { readonly tenantId: string; readonly id: string },
  state: Option.Option<unknown>,
  streamVersion: number
): Either.Either<Storage.DocumentWrite, EventStoreError> => {
  const codec = Aggregate.stateCodec(aggregate)!
  return Either.map(
    Either.mapLeft(
      Option.isNone(state) ? Either.right(null) : codec.encode(state.value),
      (message) => failure(`Projection ${aggregate.name}: snapshot of "${ref.id}" does not encode: ${message}`)
    ),
    (data) => ({
      projection: projection.name,
      projectionVersion: projection.version,
      tenantId: ref.tenantId,
      id: ref.id,
      data,
      streamVersion
    })
  )
}

/**
 * @internal the envelope a view takes `stored` in: undefined for an event it
 * does not take (not among its tags, or, without tags, one its Schema does not
 * read); an error for an event of its tags that does not decode.
 */
export const viewEnvelope = (
  view: Projection.MultiStream,
  stored: Storage.StoredEvent
): Either.Either<EventEnvelope<unknown> | undefined, EventStoreError> => {
  if (view.codec.tags !== undefined && !view.codec.tags.has(stored.type)) return Either.right(undefined)
  const decoded = view.codec.decode(stored.type, stored.data)
  if (Either.isRight(decoded)) return Either.right(Envelope.ofDecoded(view.codec, stored, decoded.right))
  return view.codec.tags === undefined ? Either.right(undefined) : Either.left(failure(
    `Projection ${view.name}: event ${stored.type} (stream "${stored.streamId}", version ${stored.version}) does not decode: ${decoded.left}`
  ))
}

/** @internal an event a view takes, with the document key it goes to. */
export interface Keyed {
  readonly view: Projection.MultiStream
  readonly key: string
  readonly envelope: EventEnvelope<unknown>
}

/** @internal the events of `stored` that `views` take, each with its document key. */
export const keyedFor = (
  views: ReadonlyArray<Projection.MultiStream>,
  stored: ReadonlyArray<Storage.StoredEvent>
): Either.Either<Array<Keyed>, EventStoreError> => {
  const keyed: Array<Keyed> = []
  for (const view of views) {
    for (const event of stored) {
      const envelope = viewEnvelope(view, event)
      if (Either.isLeft(envelope)) return Either.left(envelope.left)
      if (envelope.right === undefined) continue
      const key = view.key(envelope.right)
      if (key !== undefined) keyed.push({ view, key, envelope: envelope.right })
    }
  }
  return Either.right(keyed)
}

/** @internal the documents `keyed` events go to. */
export const refsOf = (keyed: ReadonlyArray<Keyed>): Array<Storage.DocumentRef> => {
  const refs = new Map<string, Storage.DocumentRef>()
  for (const { envelope, key, view } of keyed) {
    const ref = { projection: view.name, projectionVersion: view.version, tenantId: envelope.tenantId, id: key }
    refs.set(documentKey(ref), ref)
  }
  return Array.from(refs.values())
}

/**
 * @internal folds `keyed` events (in the order given) into their view
 * documents, each starting from its stored document or the view's initial
 * state; the writes of every document touched.
 */
export const foldViews = (
  keyed: ReadonlyArray<Keyed>,
  existing: ReadonlyMap<string, Storage.StoredDocument>
): Either.Either<Array<Storage.DocumentWrite>, EventStoreError> => {
  const states = new Map<string, { readonly view: Projection.MultiStream; readonly ref: Storage.DocumentRef; state: unknown }>()
  for (const { envelope, key, view } of keyed) {
    const ref = { projection: view.name, projectionVersion: view.version, tenantId: envelope.tenantId, id: key }
    const docKey = documentKey(ref)
    let current = states.get(docKey)
    if (current === undefined) {
      const doc = existing.get(docKey)
      let state: unknown = view.initial
      if (doc !== undefined) {
        const decoded = view.stateCodec.decode(doc.data)
        if (Either.isLeft(decoded)) return Either.left(failure(`Projection ${view.name}: document "${key}" does not decode: ${decoded.left}`))
        state = decoded.right
      }
      states.set(docKey, current = { view, ref, state })
    }
    current.state = view.evolve(current.state, envelope.data, envelope)
  }
  const writes: Array<Storage.DocumentWrite> = []
  for (const { ref, state, view } of states.values()) {
    const encoded = view.stateCodec.encode(state)
    if (Either.isLeft(encoded)) return Either.left(failure(`Projection ${view.name}: document "${ref.id}" does not encode: ${encoded.left}`))
    writes.push({ ...ref, data: encoded.right, streamVersion: null })
  }
  return Either.right(writes)
}
