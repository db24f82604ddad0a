/**
 * The store-wide cache of Live aggregate states (opt-in): per stream, the
 * encoded state of one aggregate at a version, least recently used first out.
 * Keyed by the stream's identity, (tenant, id), as the session builds it.
 *
 * @internal
 */

/** @internal */
export interface Entry {
  readonly aggregate: object
  readonly version: number
  /** The global sequence of the event at `version`: tells the same stream from a replaced one. */
  readonly sequence: number
  /** The state as its Schema encodes it. */
  readonly data: unknown
}

/** @internal */
export interface StateCache {
  readonly get: (streamId: string, aggregate: object) => Entry | undefined
  readonly set: (streamId: string, entry: Entry) => void
  readonly delete: (streamId: string) => void
  readonly size: () => number
}

/** @internal */
export const make = (capacity: number): StateCache => {
  // A Map iterates in insertion order: re-inserting on use keeps the least recent first.
  // The state is held as JSON text, so that no caller ever shares an object with the
  // cache (a Schema may pass objects through encoding and decoding as they are).
  const entries = new Map<string, Omit<Entry, "data"> & { readonly json: string }>()
  return {
    get: (streamId, aggregate) => {
      const entry = entries.get(streamId)
      if (entry === undefined || entry.aggregate !== aggregate) return undefined
      entries.delete(streamId)
      entries.set(streamId, entry)
      return { aggregate: entry.aggregate, version: entry.version, sequence: entry.sequence, data: JSON.parse(entry.json) }
    },
    set: (streamId, entry) => {
      const current = entries.get(streamId)
      // Concurrent sessions may fill in any order: never go back to an older version.
      if (current !== undefined && current.aggregate === entry.aggregate && current.version > entry.version) return
      entries.delete(streamId)
      entries.set(streamId, { aggregate: entry.aggregate, version: entry.version, sequence: entry.sequence, json: JSON.stringify(entry.data) })
      if (entries.size > capacity) entries.delete(entries.keys().next().value!)
    },
    delete: (streamId) => void entries.delete(streamId),
    size: () => entries.size
  }
}
