/**
 * The shape of `src/`: every concept in a file named after it, small enough to
 * read. No file over 400 lines, no function over 120 lines (issue 10).
 */
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"

const root = path.resolve(__dirname, "../src")
const maxFileLines = 400
const maxFunctionLines = 120

const sources = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? sources(full) : entry.name.endsWith(".ts") ? [full] : []
  })

/** Every function-like node with a body, as `file:line (n lines)`, longer than `max`. */
const longFunctions = (file: string, text: string, max: number): Array<string> => {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const found: Array<string> = []
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && "body" in node && node.body !== undefined) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line
      const lines = last - first + 1
      if (lines > max) found.push(`${path.relative(root, file)}:${first + 1} (${lines} lines)`)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return found
}

describe("structure of src/", () => {
  const files = sources(root)

  it("has no file over 400 lines", () => {
    const long = files
      .map((file) => ({ file: path.relative(root, file), lines: fs.readFileSync(file, "utf8").split("\n").length }))
      .filter((f) => f.lines > maxFileLines)
      .map((f) => `${f.file} (${f.lines} lines)`)
    expect(long).toEqual([])
  })

  it("has no function over 120 lines", () => {
    const long = files.flatMap((file) => longFunctions(file, fs.readFileSync(file, "utf8"), maxFunctionLines))
    expect(long).toEqual([])
  })

  it("the function check sees a long function", () => {
    const body = Array.from({ length: 130 }, (_, i) => `  const x${i} = ${i}`).join("\n")
    expect(longFunctions(path.join(root, "probe.ts"), `const f = () => {\n${body}\n}\n`, maxFunctionLines)).toEqual([
      "probe.ts:1 (132 lines)"
    ])
  })
})
