/**
 * Decoders of stored events compiled once per event type. Decoding a stored
 * event through its aggregate's union Schema copies the payload to add its
 * tag, finds the union member, validates the fields, and then runs the
 * member's class constructor, which copies the fields twice more and merges
 * defaults: most of the time a Live fetch spends in Node.
 *
 * For a member whose fields are plain (their encoded and decoded forms are
 * the same: no transformation, no class, nothing lazy), the stored payload
 * is validated against those fields alone, and the event built as the
 * constructor would build it (the same prototype, the same own properties in
 * the same order). Anything else, and every payload that fails validation,
 * goes through the Schema as before, so that errors read the same.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"

/** @internal a decoder of one event type's stored payloads. */
export type Decoder<E> = (data: unknown) => Either.Either<E, undefined>

// Whether a field's schema decodes to what it validates: no transformation or
// declaration (classes, Dates, Options) anywhere in it, and nothing lazy.
const plain = (ast: SchemaAST.AST, depth = 0): boolean => {
  if (depth > 32) return false
  switch (ast._tag) {
    case "Literal":
    case "UniqueSymbol":
    case "UndefinedKeyword":
    case "VoidKeyword":
    case "NeverKeyword":
    case "UnknownKeyword":
    case "AnyKeyword":
    case "StringKeyword":
    case "NumberKeyword":
    case "BooleanKeyword":
    case "BigIntKeyword":
    case "SymbolKeyword":
    case "ObjectKeyword":
    case "Enums":
    case "TemplateLiteral":
      return true
    case "Refinement":
      return plain(ast.from, depth + 1)
    case "Union":
      return ast.types.every((t) => plain(t, depth + 1))
    case "TupleType":
      return ast.elements.every((e) => plain(e.type, depth + 1)) && ast.rest.every((r) => plain(r.type, depth + 1))
    case "TypeLiteral":
      return ast.propertySignatures.every((p) => plain(p.type, depth + 1)) &&
        ast.indexSignatures.every((i) => plain(i.type, depth + 1))
    default:
      return false
  }
}

const tagOf = (literal: SchemaAST.TypeLiteral): string | undefined => {
  const tag = literal.propertySignatures.find((p) => p.name === "_tag")
  return tag !== undefined && tag.type._tag === "Literal" && typeof tag.type.literal === "string" && !tag.isOptional
    ? tag.type.literal
    : undefined
}

// A union member the fast path can take: a tagged struct, or a tagged class
// (its AST a transformation from the tagged struct to the class's declaration).
interface Member {
  readonly kind: "struct" | "class"
  readonly tag: string
  readonly fields: SchemaAST.TypeLiteral
}
// Parse options annotated on a member change how its fields decode (excess
// properties kept or rejected): such a member goes through the Schema.
const annotated = (ast: SchemaAST.AST): boolean => SchemaAST.getParseOptionsAnnotation(ast)._tag === "Some"
const memberOf = (ast: SchemaAST.AST): Member | undefined => {
  if (annotated(ast)) return undefined
  if (ast._tag === "TypeLiteral") {
    const tag = tagOf(ast)
    // The Schema builds the event in the order its fields are declared: the fast path puts the tag first.
    return tag === undefined || ast.propertySignatures[0]?.name !== "_tag" ? undefined : { kind: "struct", tag, fields: ast }
  }
  if (
    ast._tag === "Transformation" && ast.from._tag === "TypeLiteral" && ast.to._tag === "Declaration" &&
    !annotated(ast.from) && !annotated(ast.to)
  ) {
    const tag = tagOf(ast.from)
    return tag === undefined ? undefined : { kind: "class", tag, fields: ast.from }
  }
  return undefined
}

const membersOf = (ast: SchemaAST.AST): ReadonlyArray<SchemaAST.AST> => ast._tag === "Union" ? ast.types : [ast]

// The tags the union finds a member by (its encoded side, as the union's
// search does), for members the fast path does not take: a tag one of them
// holds is decided by the union itself.
const tagsOf = (ast: SchemaAST.AST, depth = 0): ReadonlyArray<string> => {
  if (depth > 32) return []
  switch (ast._tag) {
    case "Union":
      return ast.types.flatMap((t) => tagsOf(t, depth + 1))
    case "Refinement":
    case "Transformation":
      return tagsOf(ast.from, depth + 1)
    case "TypeLiteral": {
      const tag = ast.propertySignatures.find((p) => p.name === "_tag")
      if (tag === undefined) return []
      return (tag.type._tag === "Union" ? tag.type.types : [tag.type]).flatMap((t) =>
        t._tag === "Literal" && typeof t.literal === "string" ? [t.literal] : []
      )
    }
    default:
      return []
  }
}

// Whether `event` holds exactly the validated fields and then its tag, its
// class defines no constructor of its own, and it merges no constructor
// default into a field (which an absent optional field would get from the
// constructor only).
const builtAsFields = (event: unknown, fields: Record<string, unknown>): boolean => {
  if (event === null || typeof event !== "object") return false
  const keys = Reflect.ownKeys(event)
  const expected = [...Object.keys(fields), "_tag"]
  if (keys.length !== expected.length || keys.some((k, i) => k !== expected[i])) return false
  for (const key of Object.keys(fields)) {
    if (JSON.stringify((event as Record<string, unknown>)[key]) !== JSON.stringify(fields[key])) return false
  }
  // A constructor of the application's own (in a subclass of the Schema's class, or in a class an
  // `extend` builds on) must run for every event: every class below the topmost Schema class is read.
  const chain: Array<Function> = []
  for (let ctor = event.constructor; typeof ctor === "function" && ctor !== Function.prototype;) {
    chain.push(ctor)
    ctor = Object.getPrototypeOf(ctor)
  }
  const schemaClass = (ctor: Function) => Object.prototype.hasOwnProperty.call(ctor, "ast")
  let top = chain.length - 1
  while (top >= 0 && !schemaClass(chain[top])) top--
  for (const ctor of chain.slice(0, top)) {
    if (!schemaClass(ctor) && /\bconstructor\s*\(/.test(Function.prototype.toString.call(ctor))) return false
  }
  const declared = (event.constructor as { fields?: unknown } | undefined)?.fields
  if (declared === null || typeof declared !== "object") return false
  for (const [key, field] of Object.entries(declared)) {
    if (key === "_tag" || !Schema.isPropertySignature(field)) continue
    const ast = field.ast
    const defaultValue = ast._tag === "PropertySignatureDeclaration" ? ast.defaultValue : ast.to.defaultValue
    if (defaultValue !== undefined) return false
  }
  return true
}

/**
 * @internal the fast decoders of a schema's members, by tag: only members
 * whose fields are plain and whose tag no other member shares. `slow` decodes
 * one payload through the whole Schema; the first event of each type goes
 * through it, and tells what its constructor builds (the prototype of the
 * instances, checked against the member's fields), so later ones are built
 * the same way.
 */
export const compile = <E>(
  schema: Schema.Schema<E, any>,
  slow: (type: string, data: unknown) => Either.Either<E, unknown>
): ((type: string) => Decoder<E> | undefined) => {
  const candidates = new Map<string, Member | null>()
  // Parse options on the union apply to every member's fields.
  if (annotated(schema.ast)) return () => undefined
  for (const ast of membersOf(schema.ast)) {
    const member = memberOf(ast)
    if (member === undefined) {
      for (const tag of tagsOf(ast)) candidates.set(tag, null)
      continue
    }
    // A tag two members share is decided by the union itself.
    candidates.set(member.tag, candidates.has(member.tag) ? null : member)
  }
  const compiled = new Map<string, Decoder<E> | null>()
  return (type) => {
    const known = compiled.get(type)
    if (known !== undefined) return known ?? undefined
    const member = candidates.get(type)
    if (member === undefined || member === null) {
      compiled.set(type, null)
      return undefined
    }
    const fields = member.fields.propertySignatures.filter((p) => p.name !== "_tag")
    if (!fields.every((p) => plain(p.type)) || !member.fields.indexSignatures.every((i) => plain(i.type))) {
      compiled.set(type, null)
      return undefined
    }
    const validate = ParseResult.decodeUnknownEither(
      Schema.make<Record<string, unknown>, unknown, never>(new SchemaAST.TypeLiteral(fields, member.fields.indexSignatures))
    )
    // A type literal of no fields hands its input back as it is, excess
    // properties and all; the Schema (whose fields hold the tag) drops them.
    const empty = fields.length === 0 && member.fields.indexSignatures.length === 0
    // Until the first event of this type has gone through the Schema, its
    // prototype is not known: the decoder learns it then, and checks that the
    // constructor builds nothing the fast path would not (defaults merged into
    // absent fields, properties of its own): else every event takes the Schema.
    let prototype: object | undefined
    let alone = false
    const decoder: Decoder<E> = (data) => {
      if (alone) return Either.mapLeft(slow(type, data), () => undefined)
      // An array, or a payload holding a `_tag` of its own, the Schema reads as
      // `{ ...data, _tag }`: spread indices, the tag kept where the payload had it.
      if (typeof data !== "object" || data === null || Array.isArray(data) || Object.hasOwn(data, "_tag")) return Either.left(undefined)
      const validated = empty ? Either.right<Record<string, unknown>>({}) : validate(data)
      if (Either.isLeft(validated)) return Either.left(undefined)
      if (member.kind === "struct") return Either.right({ _tag: type, ...validated.right } as E)
      if (prototype === undefined) {
        const learned = slow(type, data)
        if (Either.isLeft(learned)) return Either.left(undefined)
        if (builtAsFields(learned.right, validated.right)) prototype = Object.getPrototypeOf(learned.right) as object
        else alone = true
        return Either.right(learned.right)
      }
      // As the class constructor leaves it: the fields, then the tag.
      const event = Object.create(prototype) as Record<string, unknown>
      const values = validated.right
      for (const key in values) event[key] = values[key]
      event._tag = type
      return Either.right(event as E)
    }
    compiled.set(type, decoder)
    return decoder
  }
}
