/**
 * Pure domain code: folding, and the event codec (including an upcast of an
 * old event shape through a Schema transformation).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Aggregate } from "effect-chronicle"
import { Item, ItemReady, Order, OrderCreated } from "../examples/order.js"

const envelope = <E>(data: E, version: number) => ({
  streamId: "s",
  version,
  sequence: version,
  type: (data as any)._tag,
  data,
  timestamp: new Date(0),
  tenantId: "t",
  headers: {}
})

describe("Aggregate", () => {
  it("fold is None for no events and the evolved state otherwise", () => {
    assert.isTrue(Option.isNone(Aggregate.fold(Order, [])))
    const state = Aggregate.fold(Order, [
      envelope(new OrderCreated({ items: [new Item({ name: "a", ready: false })] }), 1),
      envelope(new ItemReady({ name: "a" }), 2)
    ])
    assert.deepStrictEqual(Option.map(state, (o) => o.items.map((i) => i.ready)), Option.some([true]))
  })

  it("the codec stores the tag as the type and the rest as the payload", () => {
    const encoded = Order.codec.encode(new ItemReady({ name: "a" }))
    assert.deepStrictEqual(encoded, Either.right({ type: "ItemReady", data: { name: "a" } }))
    const decoded = Order.codec.decode("ItemReady", { name: "a" })
    assert.isTrue(Either.isRight(decoded) && decoded.right instanceof ItemReady)
    assert.isTrue(Either.isLeft(Order.codec.decode("Nope", {})))
    assert.isTrue(Either.isLeft(Order.codec.encode({ _tag: "ItemReady", name: 1 } as any)))
  })

  it("knows the event types of unions of tagged classes and structs", () => {
    assert.deepStrictEqual([...Order.codec.tags!].sort(), ["ItemReady", "OrderCreated", "OrderReady", "OrderShipped"])
    const Struct = Aggregate.make({
      name: "S",
      events: Schema.Union(Schema.TaggedStruct("A", { x: Schema.Number }), Schema.TaggedStruct("B", {})),
      initial: 0,
      evolve: (s) => s + 1
    })
    assert.deepStrictEqual([...Struct.codec.tags!].sort(), ["A", "B"])
  })

  it("an old event shape is upcast by a Schema transformation on read", () => {
    class Renamed extends Schema.TaggedClass<Renamed>()("Renamed", { fullName: Schema.String }) {}
    // Version 1 stored { name }; version 2 reads it as { fullName }.
    const V1 = Schema.Struct({ _tag: Schema.Literal("Renamed"), name: Schema.String })
    const Upcast = Schema.transform(V1, Renamed, {
      strict: true,
      decode: (v1) => new Renamed({ fullName: v1.name }),
      encode: (v2) => ({ _tag: "Renamed" as const, name: v2.fullName })
    })
    const A = Aggregate.make({ name: "A", events: Upcast, initial: "", evolve: (_, e) => e.fullName })
    const decoded = A.codec.decode("Renamed", { name: "Ada" })
    assert.deepStrictEqual(Either.map(decoded, (e) => e.fullName), Either.right("Ada"))
    assert.deepStrictEqual([...A.codec.tags!], ["Renamed"])
  })

  it("refuses an aggregate without a name", () => {
    assert.throws(() => Aggregate.make({ name: "", events: ItemReady, initial: 0, evolve: (s) => s }))
  })
})
