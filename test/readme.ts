/**
 * The README's TypeScript blocks as modules, so that test/readme.test.ts can
 * type-check and run them (the convention is described there).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"

/** The `##` section whose blocks are one story. */
export const tourHeading = "A tour of the API"

/** A fenced block of the README. */
export interface Block {
  /** The README line of the opening fence (1-based). */
  readonly line: number
  /** The nearest `##` or `###` heading above it. */
  readonly section: string
  readonly inTour: boolean
  readonly lang: string
  /** The words after the language: `nocheck`, `norun`, `standalone`. */
  readonly flags: ReadonlySet<string>
  readonly code: string
}

/** A module built from blocks: what is type-checked (and run) as one file. */
export interface Module {
  readonly name: string
  readonly blocks: ReadonlyArray<Block>
  readonly run: boolean
}

/** A module's text, and the README line of each of its lines (0 where there is none). */
export interface Source {
  readonly text: string
  readonly readmeLines: ReadonlyArray<number>
}

/** Every fenced block, with the heading it sits under. */
export const blocksOf = (markdown: string): Array<Block> => {
  const lines = markdown.split("\n")
  const blocks: Array<Block> = []
  let h2 = ""
  let section = ""
  let open: { line: number; lang: string; flags: Set<string>; code: Array<string> } | undefined
  lines.forEach((text, index) => {
    if (open !== undefined) {
      if (/^```\s*$/.test(text)) {
        blocks.push({ line: open.line, section, inTour: h2 === tourHeading, lang: open.lang, flags: open.flags, code: open.code.join("\n") })
        open = undefined
      } else {
        open.code.push(text)
      }
      return
    }
    const fence = /^```(\S*)\s*(.*)$/.exec(text)
    if (fence !== null) {
      open = { line: index + 1, lang: fence[1]!, flags: new Set(fence[2]!.split(/\s+/).filter((w) => w !== "")), code: [] }
      return
    }
    const heading = /^(#{2,3})\s+(.*?)\s*$/.exec(text)
    if (heading !== null) {
      if (heading[1] === "##") h2 = heading[2]!
      section = heading[2]!
    }
  })
  if (open !== undefined) throw new Error(`README.md:${open.line}: a code block is never closed`)
  return blocks
}

const isTypeScript = (block: Block) => block.lang === "ts" || block.lang === "typescript"

const slug = (text: string) => text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")

/**
 * The modules: the tour's checked blocks in order, then one module per other
 * section with checked blocks: the tour followed by that section's blocks,
 * or the section's blocks alone when its first block is `standalone`.
 */
export const modulesOf = (blocks: ReadonlyArray<Block>): Array<Module> => {
  const checked = blocks.filter((block) => isTypeScript(block) && !block.flags.has("nocheck"))
  const tour = checked.filter((block) => block.inTour)
  const sections = new Map<string, Array<Block>>()
  for (const block of checked) {
    if (block.inTour) continue
    const group = sections.get(block.section) ?? []
    group.push(block)
    sections.set(block.section, group)
  }
  const make = (name: string, own: ReadonlyArray<Block>, all: ReadonlyArray<Block>): Module => ({
    name,
    blocks: all,
    run: !all.some((block) => block.flags.has("norun")) && own.length > 0
  })
  const modules: Array<Module> = tour.length > 0 ? [make("tour", tour, tour)] : []
  for (const [section, own] of sections) {
    const standalone = own[0]!.flags.has("standalone")
    modules.push(make(slug(section) || "section", own, standalone ? own : [...tour, ...own]))
  }
  return modules
}

/** One import declaration, as the merged header will say it. */
const importParts = (file: ts.SourceFile, statement: ts.ImportDeclaration) => {
  const specifier = (statement.moduleSpecifier as ts.StringLiteral).text
  const clause = statement.importClause
  const whole: Array<string> = []
  const named: Array<string> = []
  if (clause === undefined) whole.push(`import ${JSON.stringify(specifier)}`)
  else {
    const typeOnly = clause.isTypeOnly ? "type " : ""
    if (clause.name !== undefined) whole.push(`import ${typeOnly}${clause.name.text} from ${JSON.stringify(specifier)}`)
    const bindings = clause.namedBindings
    if (bindings !== undefined && ts.isNamespaceImport(bindings)) {
      whole.push(`import ${typeOnly}* as ${bindings.name.text} from ${JSON.stringify(specifier)}`)
    } else if (bindings !== undefined) {
      for (const element of bindings.elements) named.push(`${typeOnly}${element.getText(file)}`)
    }
  }
  return { specifier, whole, named }
}

/**
 * A module's text: every block's import declarations hoisted and merged into
 * one header (names from one specifier united, so a later block may import
 * what an earlier one did), then the blocks in order, each after a comment
 * naming its README line; a block's `#!` line (a bin file's) is blanked.
 */
export const sourceOf = (module: Module): Source => {
  const header: Array<{ text: string; line: number }> = []
  const seen = new Set<string>()
  const named = new Map<string, { names: Array<string>; line: number }>()
  const body: Array<{ text: string; line: number }> = []
  for (const block of module.blocks) {
    const file = ts.createSourceFile(`README.md:${block.line}.ts`, block.code, ts.ScriptTarget.Latest, true)
    // A shebang may only start a file, and a block is seldom first: blanked like the imports.
    let code = block.code.replace(/^#![^\n]*/, (shebang) => " ".repeat(shebang.length))
    const imports = file.statements.filter(ts.isImportDeclaration)
    for (const statement of imports) {
      const start = statement.getStart(file)
      const line = block.line + 1 + file.getLineAndCharacterOfPosition(start).line
      const parts = importParts(file, statement)
      for (const text of parts.whole) {
        if (seen.has(text)) continue
        seen.add(text)
        header.push({ text, line })
      }
      const entry = named.get(parts.specifier) ?? { names: [], line }
      for (const name of parts.named) if (!entry.names.includes(name)) entry.names.push(name)
      if (parts.named.length > 0) named.set(parts.specifier, entry)
    }
    // Blanked, not removed, so the block keeps its lines (from the end, so the offsets hold).
    for (const statement of [...imports].reverse()) {
      const start = statement.getStart(file)
      code = code.slice(0, start) + code.slice(start, statement.end).replace(/[^\n]/g, " ") + code.slice(statement.end)
    }
    body.push({ text: `// README.md:${block.line}`, line: block.line })
    code.split("\n").forEach((text, offset) => body.push({ text, line: block.line + 1 + offset }))
  }
  for (const [specifier, entry] of named) {
    header.push({ text: `import { ${entry.names.join(", ")} } from ${JSON.stringify(specifier)}`, line: entry.line })
  }
  // An import-free module would otherwise be a script sharing the global scope.
  const all = [...header, ...body, { text: "export {}", line: 0 }]
  return { text: all.map((l) => l.text).join("\n") + "\n", readmeLines: all.map((l) => l.line) }
}

/** Writes each module to `<dir>/<name>.ts`; returns the files and their line maps. */
export const writeModules = (dir: string, modules: ReadonlyArray<Module>) => {
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  return modules.map((module) => {
    const source = sourceOf(module)
    const file = path.join(dir, `${module.name}.ts`)
    fs.writeFileSync(file, source.text)
    return { module, file, source }
  })
}

/**
 * Type-checks the files with the options of `tsconfig` (its `effect-chronicle`
 * path mapping included) and returns the diagnostics, those in a README
 * module named by README line.
 */
export const typeCheck = (
  files: ReadonlyArray<{ readonly file: string; readonly source: Source }>,
  tsconfig: string
): Array<string> => {
  // Documentation defines names to show them, so unused ones are no error here.
  const overrides: ts.CompilerOptions = { noEmit: true, noUnusedLocals: false, noUnusedParameters: false }
  const parsed = ts.getParsedCommandLineOfConfigFile(tsconfig, overrides, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
      throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n"))
    }
  })
  if (parsed === undefined) throw new Error(`cannot read ${tsconfig}`)
  const program = ts.createProgram({ rootNames: files.map((f) => f.file), options: parsed.options })
  const byFile = new Map(files.map((f) => [path.resolve(f.file), f.source]))
  return ts.getPreEmitDiagnostics(program).map((diagnostic) => {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")
    if (diagnostic.file === undefined || diagnostic.start === undefined) return message
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start)
    const source = byFile.get(path.resolve(diagnostic.file.fileName))
    const where = source !== undefined
      ? `README.md:${source.readmeLines[line] ?? "?"} (${path.basename(diagnostic.file.fileName)}:${line + 1})`
      : `${diagnostic.file.fileName}:${line + 1}`
    return `${where}: ${message}`
  })
}
