/**
 * The compiled decoders of stored events: every payload decodes to what the
 * event's Schema decodes it to (the same class, the same own properties in
 * the same order, equal by Equal and by deep equality), and every payload the
 * Schema rejects fails with the Schema's own message.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Equal from "effect/Equal"
import * as Schema from "effect/Schema"
import { Aggregate } from "effect-chronicle"

class Plain extends Schema.TaggedClass<Plain>()("Plain", {
  by: Schema.Number,
  name: Schema.optional(Schema.String),
  tags: Schema.Array(Schema.String),
  kind: Schema.Literal("a", "b"),
  at: Schema.Struct({ x: Schema.Int.pipe(Schema.positive()) }),
  maybe: Schema.NullOr(Schema.Number)
}) {
  get doubled() {
    return this.by * 2
  }
}
class Item extends Schema.Class<Item>("Item")({ name: Schema.String }) {}
class Nested extends Schema.TaggedClass<Nested>()("Nested", { items: Schema.Array(Item) }) {}
class Defaulted extends Schema.TaggedClass<Defaulted>()("Defaulted", {
  count: Schema.optional(Schema.Number).pipe(Schema.withConstructorDefault(() => 7))
}) {}
class Transformed extends Schema.TaggedClass<Transformed>()("Transformed", { n: Schema.NumberFromString }) {}
const Struct = Schema.TaggedStruct("Struct", { x: Schema.Number })
let constructed = 0
class Constructed extends Schema.TaggedClass<Constructed>()("Constructed", { n: Schema.Number }) {
  constructor(props: { readonly n: number }, options?: Schema.MakeOptions) {
    super(props, options)
    constructed++
  }
}

const Events = Schema.Union(Plain, Nested, Defaulted, Transformed, Struct, Constructed)
const Thing = Aggregate.make({ name: "Thing", events: Events, initial: 0, evolve: (n) => n + 1 })
const slow = Schema.decodeUnknownEither(Events)

const same = (type: string, data: unknown) => {
  // The first decode of a type teaches the fast path; the later ones take it.
  for (let i = 0; i < 3; i++) {
    const fast = Thing.codec.decode(type, data)
    const expected = slow(data !== null && typeof data === "object" ? { ...data, _tag: type } : { _tag: type })
    if (Either.isLeft(expected)) {
      assert.isTrue(Either.isLeft(fast), `${type} ${JSON.stringify(data)} should fail`)
      assert.include(Either.isLeft(fast) ? fast.left : "", type)
      continue
    }
    assert.isTrue(Either.isRight(fast), `${type} ${JSON.stringify(data)}: ${Either.isLeft(fast) ? fast.left : ""}`)
    const event = (fast as Either.Right<any, any>).right
    const want = expected.right as any
    assert.strictEqual(Object.getPrototypeOf(event), Object.getPrototypeOf(want))
    assert.deepStrictEqual(Reflect.ownKeys(event), Reflect.ownKeys(want))
    assert.deepStrictEqual(event, want)
    // Equal as two decodes by the Schema are (arrays inside compare by reference).
    const again = slow(data !== null && typeof data === "object" ? { ...data, _tag: type } : { _tag: type })
    assert.strictEqual(Equal.equals(event, want), Either.isRight(again) && Equal.equals(again.right, want))
    assert.strictEqual(String(event), String(want))
    assert.strictEqual(JSON.stringify(event), JSON.stringify(want))
  }
}

describe("compiled event decoders", () => {
  it("a class of plain fields: the same instance as the Schema builds, getters and all", () => {
    const data = { by: 2, tags: ["x"], kind: "a", at: { x: 3 }, maybe: null, extra: "dropped" }
    same("Plain", data)
    same("Plain", { ...data, name: "n" })
    const event = Thing.codec.decode("Plain", data)
    assert.strictEqual(Either.isRight(event) && (event.right as Plain).doubled, 4)
    assert.isTrue(Either.isRight(event) && event.right instanceof Plain)
  })

  it("payloads the Schema rejects fail with its message: a wrong type, a refinement, a missing field, not an object", () => {
    for (const data of [{ by: "2", tags: [], kind: "a", at: { x: 1 }, maybe: 1 }, { by: 1, tags: [], kind: "c", at: { x: 1 }, maybe: 1 }, {
      by: 1,
      tags: [],
      kind: "a",
      at: { x: -1 },
      maybe: 1
    }, { by: 1 }, null, "text", 3]) {
      same("Plain", data)
      const fast = Thing.codec.decode("Plain", data)
      const expected = Aggregate.makeCodec(Events).decode("Plain", data)
      assert.deepStrictEqual(fast, expected)
    }
  })

  it("members it does not take decode through the Schema: nested classes, constructor defaults, transformations, structs", () => {
    same("Nested", { items: [{ name: "a" }] })
    same("Defaulted", {})
    same("Defaulted", { count: 2 })
    same("Transformed", { n: "12" })
    same("Transformed", { n: 12 })
    same("Struct", { x: 1 })
    same("Struct", { x: "1" })
    const defaulted = Thing.codec.decode("Defaulted", {})
    assert.deepStrictEqual(Either.isRight(defaulted) && (defaulted.right as Defaulted).count, 7)
  })

  it("a class with a constructor of its own: the constructor runs for every event", () => {
    const before = constructed
    for (let i = 0; i < 5; i++) assert.isTrue(Either.isRight(Thing.codec.decode("Constructed", { n: i })))
    // The slow path of `same` below constructs too; five decodes here, five constructions.
    assert.strictEqual(constructed - before, 5)
    same("Constructed", { n: 1 })
  })

  it("an unknown type fails as before", () => {
    assert.isTrue(Either.isLeft(Thing.codec.decode("Nope", {})))
  })
})
