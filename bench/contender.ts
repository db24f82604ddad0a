/**
 * What the benchmark asks of each contender. Every operation is one complete
 * unit of work as an application would run it, returning a Promise; the
 * harness calls them from N concurrent workers and times each call.
 *
 * The domain is the same for all: a counter stream whose events are
 * `{ type: "Incremented", data: { by: 1 } }`; its state is the running total.
 */
export interface Contender {
  readonly name: string
  /** Connects to an empty database schema of its own (created by the contender), ready to run. */
  readonly setup: (url: string) => Promise<void>
  readonly teardown: () => Promise<void>
  /** Creates streams with `events` events each (not timed). */
  readonly seed: (streamIds: ReadonlyArray<string>, events: number) => Promise<void>
  /** Appends one event to an existing stream without reading it first (no expected version). */
  readonly append: (streamId: string) => Promise<void>
  /**
   * A command: fetch the stream's state for writing, decide (one Incremented
   * event), append it with the fetched version as the expectation, save.
   * Rejects with a conflict error when another writer got there first.
   */
  readonly command: (streamId: string) => Promise<void>
  /** The same command, retried on conflicts until it lands (hot-stream scenario). */
  readonly commandWithRetry: (streamId: string) => Promise<void>
  /** Optional: the command holding a row lock from fetch to save (no conflicts). */
  readonly commandExclusive?: ((streamId: string) => Promise<void>) | undefined
  /** Optional: whether this contender treats an error as a version conflict (counted, not fatal). */
  readonly isConflict: (error: unknown) => boolean
}

/**
 * Connections per contender. Contenders take turns, and a pool closes its idle
 * connections 250 ms after its turn: the smoke's turns are shorter than that,
 * so its pools are smaller, to stay within PostgreSQL's 100 connections.
 */
export const poolSize = process.env.BENCH_SMOKE === "1" ? 8 : 30

/** Error a raw contender's command rejects with when its expected version was stale. */
export class Conflict extends Error {}

/** Retries a command until it lands, on `Conflict` only (the raw contenders' `commandWithRetry`). */
export const retryOnConflict = (command: (id: string) => Promise<void>) => async (id: string): Promise<void> => {
  while (true) {
    try {
      return await command(id)
    } catch (e) {
      if (!(e instanceof Conflict)) throw e
    }
  }
}
