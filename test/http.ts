/**
 * The HTTP example end to end: its server on port 0 over a store, called with
 * the platform's HTTP client (the typed `HttpApiClient` and raw requests for
 * what the typed client would refuse to send). Run on both stores.
 */
import { HttpApiClient, HttpClient, HttpClientRequest, HttpServer } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as childProcess from "node:child_process"
import * as path from "node:path"
import pg from "pg"
import { Session } from "effect-chronicle"
import * as Http from "../examples/http-orders.js"
import { Order } from "../examples/order.js"
import { newId, type StoreUnderTest } from "./support.js"

const root = path.resolve(__dirname, "..")

const baseUrl = HttpServer.addressWith((address) =>
  Effect.succeed(address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : "")
)

const client = Effect.flatMap(baseUrl, (url) => HttpApiClient.make(Http.OrdersApi, { baseUrl: url }))

/** A raw request: status, headers and JSON body (or text when it is not JSON). */
const send = (method: "GET" | "POST", path: string, options?: { readonly body?: unknown; readonly raw?: string; readonly headers?: Record<string, string> }) =>
  Effect.gen(function*() {
    const url = `${yield* baseUrl}${path}`
    let request = HttpClientRequest.make(method)(url).pipe(HttpClientRequest.setHeaders(options?.headers ?? {}))
    if (options?.body !== undefined) request = HttpClientRequest.bodyUnsafeJson(request, options.body)
    if (options?.raw !== undefined) request = HttpClientRequest.bodyText(request, options.raw, "application/json")
    const response = yield* HttpClient.execute(request)
    const text = yield* response.text
    let body: any = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, headers: response.headers, body }
  })

const create = (id: string, items: ReadonlyArray<string>) =>
  Effect.flatMap(client, (api) => api.orders.create({ payload: { id, items: items as [string, ...Array<string>] } }))

/** The HTTP suite on one store. */
export const http = (store: StoreUnderTest) =>
  layer(
    Http.layer({ port: 0, lockTimeout: "300 millis" }).pipe(
      Layer.provideMerge(store.layer([])),
      Layer.provideMerge(NodeHttpClient.layerUndici)
    ),
    { excludeTestServices: true }
  )(`HTTP example on ${store.name}`, (it) => {
    it.effect("create answers 201 with version 1 and its ETag; GET gives state, version and ETag", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        const [created, response] = yield* api.orders.create({ payload: { id, items: ["kettle", "cups"] }, withResponse: true })
        assert.strictEqual(response.status, 201)
        assert.strictEqual(response.headers["etag"], "\"1\"")
        assert.deepStrictEqual(created, new Http.OrderView({
          id,
          version: 1,
          items: [{ name: "kettle", ready: false }, { name: "cups", ready: false }],
          ready: false,
          shipped: false
        }))
        const got = yield* send("GET", `/orders/${id}`)
        assert.strictEqual(got.status, 200)
        assert.strictEqual(got.headers["etag"], "\"1\"")
        assert.deepStrictEqual(got.body, { ...created })
        // The id is taken: 409, and the order is untouched.
        const again = yield* Effect.flip(create(id, ["other"]))
        assert.deepStrictEqual(again, new Http.OrderExists({ orderId: id }))
        assert.strictEqual((yield* send("POST", "/orders", { body: { id, items: ["x"] } })).status, 409)
        assert.deepStrictEqual((yield* api.orders.get({ path: { id } })).items.map((i) => i.name), ["kettle", "cups"])
      }))

    it.effect("a command at the current version answers 200 with the new version; a stale If-Match 409 with the current one", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        yield* create(id, ["a", "b", "c"])
        const [marked, response] = yield* api.orders.markItemReady({
          path: { id, name: "a" },
          headers: { "if-match": 1 },
          withResponse: true
        })
        assert.strictEqual(response.status, 200)
        assert.strictEqual(response.headers["etag"], "\"2\"")
        assert.strictEqual(marked.version, 2)
        assert.deepStrictEqual(marked.items.map((i) => i.ready), [true, false, false])
        // The client saw version 1: conflict, current version in body and ETag, nothing written, no retry past it.
        const stale = yield* Effect.flip(api.orders.markItemReady({ path: { id, name: "b" }, headers: { "if-match": 1 } }))
        assert.deepStrictEqual(stale, new Http.VersionConflict({ orderId: id, expectedVersion: 1, currentVersion: 2 }))
        const raw = yield* send("POST", `/orders/${id}/items/b/ready`, { headers: { "if-match": "\"1\"" } })
        assert.strictEqual(raw.status, 409)
        assert.strictEqual(raw.headers["etag"], "\"2\"")
        assert.deepInclude(raw.body, { _tag: "VersionConflict", currentVersion: 2 })
        assert.strictEqual((yield* api.orders.get({ path: { id } })).version, 2)
        // A bare version is accepted too; marking a ready item again is a no-op at the same version.
        assert.strictEqual((yield* send("POST", `/orders/${id}/items/b/ready`, { headers: { "if-match": "2" } })).status, 200)
        const noop = yield* send("POST", `/orders/${id}/items/b/ready`)
        assert.deepInclude(noop, { status: 200 })
        assert.strictEqual(noop.headers["etag"], "\"3\"")
      }))

    it.effect("commands racing on one If-Match: one wins, every loser gets 409 with the winner's version", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        const names = ["a", "b", "c", "d", "e"]
        yield* create(id, names)
        const results = yield* Effect.forEach(
          names,
          (name) => Effect.either(api.orders.markItemReady({ path: { id, name }, headers: { "if-match": 1 } })),
          { concurrency: "unbounded" }
        )
        const won = results.filter((r) => r._tag === "Right")
        const lost = results.flatMap((r) => r._tag === "Left" ? [r.left] : [])
        assert.strictEqual(won.length, 1)
        assert.deepStrictEqual(lost.map((e) => [e._tag, (e as Http.VersionConflict).currentVersion]), [
          ["VersionConflict", 2],
          ["VersionConflict", 2],
          ["VersionConflict", 2],
          ["VersionConflict", 2]
        ])
        const order = yield* api.orders.get({ path: { id } })
        assert.strictEqual(order.version, 2)
        assert.strictEqual(order.items.filter((i) => i.ready).length, 1)
      }))

    it.effect("concurrent commands without If-Match all succeed: the handler retries conflicts", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        const names = ["a", "b", "c", "d", "e", "f"]
        yield* create(id, names)
        const results = yield* Effect.forEach(names, (name) => api.orders.markItemReady({ path: { id, name }, headers: {} }), {
          concurrency: "unbounded"
        })
        assert.strictEqual(results.length, 6)
        const order = yield* api.orders.get({ path: { id } })
        // Six ItemReady and one OrderReady after OrderCreated: each item marked once.
        assert.strictEqual(order.version, 8)
        assert.isTrue(order.ready)
        assert.isTrue(order.items.every((i) => i.ready))
        const events = yield* Session.run(Session.readStream(id))
        assert.deepStrictEqual(events.map((e) => e.type).filter((t) => t === "OrderReady"), ["OrderReady"])
      }))

    it.effect("the exclusive command answers 423 with Retry-After while another session holds the lock, then ships", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        yield* create(id, ["a"])
        yield* api.orders.markItemReady({ path: { id, name: "a" }, headers: {} })
        const holding = yield* Effect.makeLatch()
        const release = yield* Effect.makeLatch()
        const holder = yield* Effect.fork(Session.run(Effect.gen(function*() {
          yield* Session.fetchForExclusiveWriting(Order, id)
          yield* holding.open
          yield* release.await
        })))
        yield* holding.await
        const locked = yield* send("POST", `/orders/${id}/ship`)
        assert.strictEqual(locked.status, 423)
        assert.deepStrictEqual(locked.body, { _tag: "OrderLocked", orderId: id, timeoutMillis: 300 })
        assert.strictEqual(locked.headers["retry-after"], "1")
        const typed = yield* Effect.flip(api.orders.ship({ path: { id }, headers: {} }))
        assert.strictEqual(typed._tag, "OrderLocked")
        yield* release.open
        yield* Fiber.join(holder)
        const shipped = yield* api.orders.ship({ path: { id }, headers: { "if-match": 3 } })
        assert.deepInclude(shipped, { version: 4, shipped: true })
        // Shipping again is a no-op.
        assert.strictEqual((yield* api.orders.ship({ path: { id }, headers: {} })).version, 4)
      }))

    it.effect("domain rejections answer 422 with the reason; an unknown order 404", () =>
      Effect.gen(function*() {
        const api = yield* client
        const id = newId("order")
        yield* create(id, ["a", "b"])
        const unknownItem = yield* Effect.flip(api.orders.markItemReady({ path: { id, name: "zzz" }, headers: {} }))
        assert.deepStrictEqual(unknownItem, new Http.CommandRejected({ orderId: id, reason: "the order has no item \"zzz\"" }))
        const notReady = yield* send("POST", `/orders/${id}/ship`)
        assert.strictEqual(notReady.status, 422)
        assert.deepStrictEqual(notReady.body, { _tag: "CommandRejected", orderId: id, reason: "items not ready: a, b" })
        assert.strictEqual((yield* api.orders.get({ path: { id } })).version, 1)
        const missing = newId("none")
        assert.deepStrictEqual(yield* Effect.flip(api.orders.get({ path: { id: missing } })), new Http.OrderNotFound({ orderId: missing }))
        assert.strictEqual((yield* send("POST", `/orders/${missing}/items/a/ready`)).status, 404)
        assert.strictEqual((yield* send("POST", `/orders/${missing}/ship`)).status, 404)
        // The 404 wrote nothing: the id is still free.
        assert.strictEqual((yield* create(missing, ["a"])).version, 1)
      }))

    it.effect("any valid stream id works in a path: 200 characters, case kept, an encoded slash", () =>
      Effect.gen(function*() {
        const id = `Order/${newId("Ü")}`.padEnd(200, "x")
        assert.strictEqual((yield* send("POST", "/orders", { body: { id, items: ["a"] } })).status, 201)
        const path = `/orders/${encodeURIComponent(id)}`
        assert.strictEqual((yield* send("POST", `${path}/items/a/ready`, { headers: { "if-match": "1" } })).status, 200)
        const got = yield* send("GET", path)
        assert.deepInclude(got.body, { id, version: 3, ready: true })
        assert.strictEqual((yield* send("GET", path.toLowerCase())).status, 404)
      }))

    it.effect("malformed input answers 400 naming what was wrong, and writes nothing", () =>
      Effect.gen(function*() {
        const id = newId("order")
        const bad = [
          yield* send("POST", "/orders", { body: { id, items: [] } }),
          yield* send("POST", "/orders", { body: { id, items: ["a", "a"] } }),
          yield* send("POST", "/orders", { body: { id } }),
          yield* send("POST", "/orders", { raw: "{not json" }),
          yield* send("POST", "/orders", { body: { id: " ", items: ["a"] } }),
          yield* send("GET", `/orders/${"x".repeat(201)}`)
        ]
        assert.deepStrictEqual(bad.map((r) => r.status), [400, 400, 400, 400, 400, 400])
        assert.include(JSON.stringify(bad[1].body), "item names must be unique")
        assert.include(JSON.stringify(bad[4].body), "must not be only white space")
        assert.include(JSON.stringify(bad[5].body), "must be at most 200 characters")
        assert.strictEqual((yield* send("GET", `/orders/${id}`)).status, 404)
        yield* create(id, ["a"])
        const badVersion = yield* send("POST", `/orders/${id}/items/a/ready`, { headers: { "if-match": "W/\"1\"" } })
        assert.strictEqual(badVersion.status, 400)
        assert.include(JSON.stringify(badVersion.body), "expected a version such as")
        assert.strictEqual((yield* send("GET", `/orders/${id}`)).body.version, 1)
      }))
  })

/**
 * The example's main as a user runs it (`tsx examples/http-orders.ts`) on a
 * free port: it serves a create and a read, then SIGINT shuts it down cleanly
 * (exit code 0). On PostgreSQL it uses a scratch schema, dropped afterwards.
 */
export const runsMain = (store: "memory" | "postgres", databaseUrl: string) =>
  Effect.gen(function*() {
    const schema = `chronicle_test_http_${Math.random().toString(36).slice(2, 10)}`
    const env = store === "memory"
      ? { ...process.env, CHRONICLE_STORE: "memory", PORT: "0" }
      : { ...process.env, DATABASE_URL: databaseUrl, CHRONICLE_SCHEMA: schema, PORT: "0" }
    const child = childProcess.spawn(path.join(root, "node_modules/.bin/tsx"), ["examples/http-orders.ts"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf-8")))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf-8")))
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        if (child.exitCode === null) child.kill("SIGKILL")
        if (store === "postgres") {
          const client = new pg.Client({ connectionString: databaseUrl })
          await client.connect()
          await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
          await client.end()
        }
      })
    )
    const port = yield* Effect.promise(async () => {
      for (let i = 0; i < 600; i++) {
        const match = /listening on http:\/\/[^:]+:(\d+)/.exec(output)
        if (match !== null) return Number(match[1])
        if (child.exitCode !== null) break
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      throw new Error(`the server did not start: ${output}`)
    })
    const url = `http://127.0.0.1:${port}/orders`
    const id = newId("main")
    const created = yield* Effect.promise(() =>
      fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id, items: ["a"] }) })
    )
    const got = yield* Effect.promise(() => fetch(`${url}/${id}`))
    const body = yield* Effect.promise(() => got.json())
    child.kill("SIGINT")
    const code = yield* Effect.promise(() => exited)
    return { output, created: created.status, got: got.status, etag: got.headers.get("etag"), body, code }
  })
