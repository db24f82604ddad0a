/**
 * Review of the compiled event decoders: cases where the fast path must give
 * what the union Schema gives (or fail with its message).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { Aggregate } from "effect-chronicle"

const check = <E, I>(events: Schema.Schema<E, I>, type: string, data: unknown) => {
  const codec = Aggregate.makeCodec(events)
  const slow = Schema.decodeUnknownEither(events as Schema.Schema<E, I, never>)
  for (let i = 0; i < 3; i++) {
    const fast = codec.decode(type, data)
    const expected = slow(data !== null && typeof data === "object" ? { ...data, _tag: type } : { _tag: type })
    if (Either.isLeft(expected)) {
      assert.isTrue(Either.isLeft(fast), `decode ${i} of ${type} ${JSON.stringify(data)} should fail`)
      continue
    }
    assert.isTrue(Either.isRight(fast), `decode ${i}: ${Either.isLeft(fast) ? fast.left : ""}`)
    const event = (fast as Either.Right<any, any>).right
    const want = expected.right as any
    assert.strictEqual(Object.getPrototypeOf(event), Object.getPrototypeOf(want))
    assert.deepStrictEqual(Reflect.ownKeys(event), Reflect.ownKeys(want), `decode ${i}: key order`)
    assert.deepStrictEqual(event, want)
  }
}

describe("review: compiled event decoders", () => {
  it("an onExcessProperty: error annotation on the union rejects excess fields on every decode", () => {
    const A = Schema.TaggedStruct("A", { x: Schema.Number })
    class B extends Schema.TaggedClass<B>()("B", { y: Schema.Number }) {}
    const Events = Schema.Union(A, B).annotations({ parseOptions: { onExcessProperty: "error" } })
    check(Events, "A", { x: 1, extra: 2 })
    check(Events, "B", { y: 1, extra: 2 })
  })

  it("an onExcessProperty: preserve annotation on a member keeps excess fields on every decode", () => {
    const A = Schema.TaggedStruct("A", { x: Schema.Number }).annotations({ parseOptions: { onExcessProperty: "preserve" } })
    const Events = Schema.Union(A, Schema.TaggedStruct("C", {}))
    check(Events, "A", { x: 1, extra: 2 })
  })

  it("a struct member declaring its tag last keeps the Schema's key order", () => {
    const A = Schema.Struct({ x: Schema.Number, _tag: Schema.Literal("A") })
    const Events = Schema.Union(A, Schema.TaggedStruct("C", {}))
    check(Events, "A", { x: 1 })
  })

  it("a tag shared with a member the fast path does not take is decided by the union", () => {
    const First = Schema.TaggedStruct("A", { a: Schema.String }).pipe(Schema.filter(() => true))
    const Second = Schema.TaggedStruct("A", { b: Schema.optional(Schema.Number) })
    const Events = Schema.Union(First, Second)
    check(Events, "A", { a: "x" })
  })

  it("a constructor of the application's own in a class another extends runs for every event", () => {
    let constructed = 0
    class Base extends Schema.TaggedClass<Base>()("Base", { n: Schema.Number }) {
      constructor(props: { readonly n: number }, options?: Schema.MakeOptions) {
        super(props, options)
        constructed++
      }
    }
    class Sub extends Base.extend<Sub>("Sub")({ m: Schema.Number }) {}
    const Events = Schema.Union(Sub, Schema.TaggedStruct("C", {}))
    const codec = Aggregate.makeCodec(Events)
    constructed = 0
    for (let i = 0; i < 3; i++) assert.isTrue(Either.isRight(codec.decode("Base", { n: 1, m: 2 })))
    assert.strictEqual(constructed, 3)
  })

  it("a payload holding a _tag of its own decodes under its stored type, through an index signature too", () => {
    const A = Schema.Struct({ _tag: Schema.Literal("A") }, Schema.Record({ key: Schema.String, value: Schema.Unknown }))
    class B extends Schema.TaggedClass<B>()("B", { n: Schema.Number }) {}
    const Events = Schema.Union(A, B)
    check(Events, "A", { _tag: "Z", x: 1 })
    check(Events, "B", { n: 1 })
    check(Events, "B", { _tag: "Z", n: 1, m: 2 })
  })

  it("an array payload decodes as the Schema spreads it", () => {
    class A extends Schema.TaggedClass<A>()("A", { n: Schema.optional(Schema.Number) }) {}
    const R = Schema.Struct({ _tag: Schema.Literal("R") }, Schema.Record({ key: Schema.String, value: Schema.String }))
    const E = Schema.TaggedStruct("E", {})
    const Events = Schema.Union(A, R, E)
    for (const data of [[], ["x"]]) {
      check(Events, "A", data)
      check(Events, "R", data)
      check(Events, "E", data)
    }
  })

  it("a member of no fields but its tag drops a payload's excess properties", () => {
    const E = Schema.TaggedStruct("E", {})
    class F extends Schema.TaggedClass<F>()("F", {}) {}
    const Events = Schema.Union(E, F)
    check(Events, "E", { extra: 1 })
    const codec = Aggregate.makeCodec(Events)
    const slow = Schema.decodeUnknownEither(Events)
    for (const data of [{}, { extra: 1 }, { extra: 2 }]) {
      const fast = codec.decode("F", data)
      const want = slow({ ...data, _tag: "F" })
      assert.isTrue(Either.isRight(fast) && Either.isRight(want))
      if (Either.isRight(fast) && Either.isRight(want)) {
        assert.deepStrictEqual(Reflect.ownKeys(fast.right), Reflect.ownKeys(want.right))
        assert.strictEqual(Object.getPrototypeOf(fast.right), Object.getPrototypeOf(want.right))
      }
    }
  })
})
