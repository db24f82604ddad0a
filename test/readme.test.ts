/**
 * The README never lies: its TypeScript blocks are type-checked and run.
 *
 * The convention (test/readme.ts builds the modules):
 * - Every ```ts block of "## A tour of the API" (its `###` subsections
 *   included) belongs to one module, in order: the tour is one story, so a
 *   block may use what an earlier block defined.
 * - Every other section (the nearest `##` or `###` heading) with ```ts blocks
 *   is a module of its own: the tour's code followed by that section's blocks,
 *   so a section may build on the tour's `Order`. A section whose first block
 *   is ```ts standalone starts from nothing instead (it defines its own names).
 * - Import declarations are hoisted and merged per module, so any block may
 *   import what it uses (names from one specifier are united); a bin's `#!`
 *   line is blanked.
 * - ```ts norun: type-checked, but its module is not run (it needs a server,
 *   runs forever, or declares vitest tests, which cannot be declared inside
 *   this test). ```ts nocheck: a fragment, shown only; keep those few and say
 *   why in the text around it.
 * - The modules are written to `.readme-check/` (gitignored), type-checked
 *   with tsconfig.json's options (its `effect-chronicle` path mapping), and
 *   each runnable module is imported: its top-level code runs (the tour runs
 *   its story on the in-memory store).
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { blocksOf, modulesOf, sourceOf, typeCheck, writeModules } from "./readme.js"

const root = path.resolve(__dirname, "..")
const readme = fs.readFileSync(path.join(root, "README.md"), "utf-8")
const blocks = blocksOf(readme)
const modules = modulesOf(blocks)
const written = writeModules(path.join(root, ".readme-check"), modules)

describe("README.md", () => {
  it("the tour is one module of all its blocks, and fragments are few", () => {
    const tour = modules.find((module) => module.name === "tour")
    assert.isDefined(tour)
    const tourBlocks = blocks.filter((block) => block.inTour && block.lang === "ts")
    assert.isAtLeast(tourBlocks.length, 5)
    assert.deepStrictEqual(tour!.blocks.map((b) => b.line), tourBlocks.filter((b) => !b.flags.has("nocheck")).map((b) => b.line))
    assert.isTrue(tour!.run)
    const fragments = blocks.filter((block) => block.lang === "ts" && block.flags.has("nocheck"))
    assert.isAtMost(fragments.length, 3, `nocheck blocks at README lines ${fragments.map((b) => b.line)}`)
  })

  it("every TypeScript block type-checks", { timeout: 240_000 }, () => {
    assert.deepStrictEqual(typeCheck(written, path.join(root, "tsconfig.json")), [])
  })

  for (const { file, module } of written.filter((w) => w.module.run)) {
    it(`the ${module.name} module runs`, { timeout: 60_000 }, async () => {
      await import(pathToFileURL(file).href)
    })
  }
})

// The extractor itself, on a README of its own.
const sample = [
  "# Title",
  "## A tour of the API",
  "```ts",
  "import { Effect } from \"effect\"",
  "const one = 1",
  "```",
  "### Later",
  "```ts",
  "import { Effect, Layer } from \"effect\"",
  "const two = one + 1",
  "```",
  "## Other",
  "```ts",
  "const three: number = two + 1",
  "```",
  "```ts norun",
  "const four = three + 1",
  "```",
  "## Alone",
  "```ts standalone",
  "const five: string = 5",
  "```",
  "## Fragments",
  "```ts nocheck",
  "yield* nothing",
  "```",
  "```sh",
  "npm test",
  "```"
].join("\n")

describe("the README extractor", () => {
  const sampleBlocks = blocksOf(sample)
  const sampleModules = modulesOf(sampleBlocks)

  it("finds each block under its heading, with its flags", () => {
    assert.deepStrictEqual(sampleBlocks.map((b) => [b.line, b.section, b.inTour, b.lang, [...b.flags]]), [
      [3, "A tour of the API", true, "ts", []],
      [8, "Later", true, "ts", []],
      [13, "Other", false, "ts", []],
      [16, "Other", false, "ts", ["norun"]],
      [20, "Alone", false, "ts", ["standalone"]],
      [24, "Fragments", false, "ts", ["nocheck"]],
      [27, "Fragments", false, "sh", []]
    ])
  })

  it("makes the tour one module, other sections the tour plus their blocks, standalone ones alone", () => {
    assert.deepStrictEqual(sampleModules.map((m) => [m.name, m.blocks.map((b) => b.line), m.run]), [
      ["tour", [3, 8], true],
      ["other", [3, 8, 13, 16], false],
      ["alone", [20], true]
    ])
  })

  it("hoists and merges imports, keeping each block's lines", () => {
    const source = sourceOf(sampleModules[0]!)
    const lines = source.text.split("\n")
    assert.strictEqual(lines[0], "import { Effect, Layer } from \"effect\"")
    assert.strictEqual(lines.filter((l) => l.startsWith("import")).length, 1)
    const two = lines.indexOf("const two = one + 1")
    assert.strictEqual(source.readmeLines[two], 10)
    assert.strictEqual(source.readmeLines[lines.indexOf("const one = 1")], 5)
  })

  it("blanks a block's shebang, which may only start a file", () => {
    const [bin] = blocksOf(["## Bin", "```ts", "#!/usr/bin/env node", "import { Effect } from \"effect\"", "Effect.void", "```"].join("\n"))
    const source = sourceOf({ name: "bin", blocks: [bin!], run: false })
    const lines = source.text.split("\n")
    assert.isFalse(source.text.includes("#!"))
    assert.strictEqual(lines[0], "import { Effect } from \"effect\"")
    assert.strictEqual(source.readmeLines[lines.indexOf("Effect.void")], 5)
  })

  it("reports a type error at its README line", { timeout: 120_000 }, () => {
    const dir = path.join(root, ".readme-check", "sample")
    const files = writeModules(dir, [sampleModules[2]!])
    const errors = typeCheck(files, path.join(root, "tsconfig.json"))
    assert.strictEqual(errors.length, 1)
    assert.match(errors[0]!, /^README\.md:21 .*Type 'number' is not assignable to type 'string'/)
  })
})
