import { assert, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { Session } from "effect-chronicle"
import { Item, Order, OrderCreated, OrderReady } from "../examples/order.js"
import { archiving } from "./archiving.js"
import { memoryStore, memoryStoreWith, newId, pgStore, ScratchSchema } from "./support.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  archiving(memoryStore, lifecycle)
  archiving(pgStore(), lifecycle)
}
// The Live path through kept states (the tail read tells the flag too).
archiving(memoryStoreWith({ liveStateCache: 8 }), "Live")
archiving(pgStore({ liveStateCache: 8 }), "Live")

const save = <A, E, R>(effect: Effect.Effect<A, E, R>) => Session.run(Effect.zipRight(effect, Session.saveChanges))

layer(pgStore().layer([]), { excludeTestServices: true })("archiving: postgres write-combining", (it) => {
  it.effect("a combined statement fails only the archived streams' saves; the others land in shared transactions", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const schema = yield* ScratchSchema
      const ids = Array.from({ length: 60 }, () => newId("wc"))
      const archived = (i: number) => i % 3 === 0
      yield* Effect.forEach(ids, (id) => save(Session.append(Order, id, [new OrderCreated({ items: [new Item({ name: "a", ready: false })] })])), {
        concurrency: 8,
        discard: true
      })
      yield* save(Effect.forEach(ids.filter((_, i) => archived(i)), (id) => Session.archiveStream(id), { discard: true }))
      // Exact, new-stream and blind expectations, all at once, well beyond the in-flight limit.
      const results = yield* Effect.forEach(ids, (id, i) =>
        Effect.either(save(Session.append(Order, id, [new OrderReady()], i % 2 === 0 ? { expectedVersion: 1 } : undefined))), {
        concurrency: "unbounded"
      })
      for (const [i, r] of results.entries()) {
        assert.strictEqual(r._tag, archived(i) ? "Left" : "Right")
        if (r._tag === "Left") assert.deepInclude(r.left, { _tag: "StreamArchivedError", streamId: ids[i] })
      }
      const rows = yield* sql.unsafe<{ stream_id: string; tx_id: string }>(
        `SELECT stream_id, tx_id::text FROM "${schema}".events WHERE stream_id = ANY($1) AND version = 2`,
        [ids]
      )
      assert.deepStrictEqual(rows.map((r) => r.stream_id).sort(), ids.filter((_, i) => !archived(i)).sort())
      // Saves were combined: fewer transactions than saves.
      assert.isBelow(new Set(rows.map((r) => r.tx_id)).size, rows.length)
      const flags = yield* sql.unsafe<{ id: string; archived: boolean }>(
        `SELECT id, archived FROM "${schema}".streams WHERE id = ANY($1)`,
        [ids]
      )
      assert.deepStrictEqual(flags.filter((f) => f.archived).map((f) => f.id).sort(), ids.filter((_, i) => archived(i)).sort())
    }))
})
