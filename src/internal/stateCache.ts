/**
 * The store-wide cache of Live aggregate states (opt-in): per stream, the
 * encoded state of one aggregate at a version, least recently used first out.
 *
 * @internal
 */

/** @internal */
export interface Entry {
  readonly aggregate: object
  readonly version: number
  /** The state as its Schema encodes it: a fold can never change a cached entry. */
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
  const entries = new Map<string, Entry>()
  return {
    get: (streamId, aggregate) => {
      const entry = entries.get(streamId)
      if (entry === undefined || entry.aggregate !== aggregate) return undefined
      entries.delete(streamId)
      entries.set(streamId, entry)
      return entry
    },
    set: (streamId, entry) => {
      const current = entries.get(streamId)
      // Concurrent sessions may fill in any order: never go back to an older version.
      if (current !== undefined && current.aggregate === entry.aggregate && current.version > entry.version) return
      entries.delete(streamId)
      entries.set(streamId, entry)
      if (entries.size > capacity) entries.delete(entries.keys().next().value!)
    },
    delete: (streamId) => void entries.delete(streamId),
    size: () => entries.size
  }
}
