import { assert, describe, it } from "@effect/vitest"
import * as StateCache from "../src/internal/stateCache.js"

describe("the cache of Live states", () => {
  const a = { name: "A" }
  const b = { name: "B" }

  it("keeps at most its capacity, forgetting the least recently used first", () => {
    const cache = StateCache.make(2)
    cache.set("s1", { aggregate: a, version: 1, sequence: 1, data: 1 })
    cache.set("s2", { aggregate: a, version: 1, sequence: 1, data: 2 })
    assert.strictEqual(cache.get("s1", a)?.data, 1) // s1 is now the most recent
    cache.set("s3", { aggregate: a, version: 1, sequence: 1, data: 3 })
    assert.strictEqual(cache.size(), 2)
    assert.isUndefined(cache.get("s2", a))
    assert.strictEqual(cache.get("s1", a)?.data, 1)
    assert.strictEqual(cache.get("s3", a)?.data, 3)
  })

  it("never goes back to an older version of the same aggregate, and answers only for the aggregate it holds", () => {
    const cache = StateCache.make(10)
    cache.set("s", { aggregate: a, version: 5, sequence: 5, data: "five" })
    cache.set("s", { aggregate: a, version: 3, sequence: 3, data: "three" })
    assert.strictEqual(cache.get("s", a)?.data, "five")
    assert.isUndefined(cache.get("s", b))
    cache.set("s", { aggregate: b, version: 1, sequence: 1, data: "other" })
    assert.isUndefined(cache.get("s", a))
    cache.delete("s")
    assert.isUndefined(cache.get("s", b))
  })

  it("hands out copies: changing what it gave changes nothing it keeps", () => {
    const cache = StateCache.make(10)
    const data = { tags: { a: true } }
    cache.set("s", { aggregate: a, version: 1, sequence: 1, data })
    data.tags = { a: false }
    const first = cache.get("s", a)!.data as { tags: Record<string, boolean> }
    first.tags.injected = true
    assert.deepStrictEqual(cache.get("s", a)!.data, { tags: { a: true } })
  })
})
