/**
 * PostgreSQL with the answer lost: a TCP proxy in the test process, between
 * the store's pool and the server, cuts the connection that carries a
 * write-combined statement, either after the server answered (committed,
 * ReadyForQuery seen) and before the client got the answer, or before the
 * statement reached the server. Each save writes a unique token, so a ledger
 * check finds any save lost, doubled, or reported failed although written.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import { inject } from "vitest"
import { Aggregate, EventStore, EventStorePg, Projections, Session } from "effect-chronicle"
import { statementName } from "../src/pg/PgStorage.js"
import { newId } from "./support.js"

class Entry extends Schema.TaggedClass<Entry>()("Entry", { token: Schema.String }) {}
const Ledger = Aggregate.make({
  name: "Ledger",
  events: Schema.Union(Entry),
  state: Schema.Struct({ entries: Schema.Number }),
  initial: { entries: 0 },
  evolve: (state) => ({ entries: state.entries + 1 })
})

// ReadyForQuery: the server's last message of an answer, sent after COMMIT.
const readyForQuery = Buffer.from([0x5a, 0, 0, 0, 5])

type Mode = "afterCommit" | "beforeSend"

/** A TCP proxy to the test server that cuts one connection when armed. */
const proxy = Effect.acquireRelease(
  Effect.async<{
    readonly port: number
    readonly arm: (marker: string, mode: Mode, blackoutMillis?: number) => void
    readonly cuts: () => number
    readonly server: net.Server
    readonly sockets: Set<net.Socket>
  }>((resume) => {
    const target = new URL(inject("databaseUrl"))
    let armed: { marker: Buffer; mode: Mode; blackoutMillis: number } | undefined
    let blackoutUntil = 0
    let cuts = 0
    const sockets = new Set<net.Socket>()
    const server = net.createServer((client) => {
      if (Date.now() < blackoutUntil) return client.destroy()
      const upstream = net.connect(Number(target.port || 5432), target.hostname)
      sockets.add(client)
      sockets.add(upstream)
      let doomed = false
      // The blackout of the fault this connection was doomed by.
      let blackout = 0
      const cut = () => {
        cuts++
        armed = undefined
        client.destroy()
        upstream.destroy()
        // A blackout takes the server away: every connection, and new ones for a while.
        if (blackout > 0) {
          blackoutUntil = Date.now() + blackout
          for (const s of sockets) s.destroy()
        }
      }
      client.on("data", (chunk) => {
        if (armed !== undefined && !doomed && chunk.includes(armed.marker)) {
          blackout = armed.blackoutMillis
          if (armed.mode === "beforeSend") return cut()
          // One connection is doomed: a second combined statement sent before its answer goes through.
          doomed = true
          armed = undefined
        }
        upstream.write(chunk)
      })
      upstream.on("data", (chunk) => {
        if (doomed && chunk.includes(readyForQuery)) return cut()
        client.write(chunk)
      })
      const end = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on("error", end).on("close", end)
      upstream.on("error", end).on("close", end)
    })
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({
        port: (server.address() as net.AddressInfo).port,
        arm: (marker, mode, blackoutMillis = 0) => {
          armed = { marker: Buffer.from(marker), mode, blackoutMillis }
        },
        cuts: () => cuts,
        server,
        sockets
      })))
  }),
  (p) =>
    Effect.async<void>((resume) => {
      for (const s of p.sockets) s.destroy()
      p.server.close(() => resume(Effect.void))
    })
)

const urlThrough = (port: number) => {
  const url = new URL(inject("databaseUrl"))
  url.hostname = "127.0.0.1"
  url.port = String(port)
  return url.toString()
}

const storeThrough = (schema: string, port: number) =>
  EventStorePg.layer({ schema }).pipe(
    Layer.provideMerge(Projections.layer([])),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(urlThrough(port)), maxConnections: 10 }))
  )

const Admin = PgClient.layer({ url: Redacted.make(inject("databaseUrl")), maxConnections: 2 })

interface Stored {
  readonly stream: string
  readonly version: number
  readonly token: string
}
const ledger = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe<{ stream_id: string; version: string; token: string }>(
      `SELECT stream_id, version, data->>'token' AS token FROM "${schema}".events ORDER BY stream_id, version`
    )).pipe(Effect.map((rows): ReadonlyArray<Stored> =>
      rows.map((r) => ({ stream: r.stream_id, version: Number(r.version), token: r.token }))
    ))

interface Outcome {
  readonly stream: string
  readonly token: string
  readonly result: Either.Either<number, { readonly _tag: string; readonly message: string }>
}

/** What the ledger says about the outcomes: each count must be zero. */
const audit = (outcomes: ReadonlyArray<Outcome>, stored: ReadonlyArray<Stored>) => {
  const byToken = new Map<string, Array<Stored>>()
  for (const s of stored) byToken.set(s.token, [...(byToken.get(s.token) ?? []), s])
  let lost = 0
  let doubled = 0
  let falseFailures = 0
  let wrongVersion = 0
  let unknown = 0
  for (const o of outcomes) {
    const found = byToken.get(o.token) ?? []
    if (found.length > 1) doubled++
    if (Either.isRight(o.result)) {
      if (found.length === 0) lost++
      else if (found[0].version !== o.result.right || found[0].stream !== o.stream) wrongVersion++
    } else if (o.result.left.message.includes("unknown")) {
      unknown++
    } else if (found.length > 0) {
      falseFailures++
    }
  }
  return { lost, doubled, falseFailures, wrongVersion, unknown }
}

const errorOf = (e: unknown) => ({ _tag: (e as any)?._tag ?? "Defect", message: String((e as any)?.message ?? e) })

const blindAppend = (id: string, token: string) =>
  Session.run(Effect.gen(function*() {
    yield* Session.append(Ledger, id, [new Entry({ token })])
    const saved = yield* Session.saveChanges
    return saved.streams[0].version
  }))

const optimistic = (id: string, token: string) =>
  Session.run(Effect.gen(function*() {
    const stream = yield* Session.fetchForWriting(Ledger, id)
    yield* stream.appendOne(new Entry({ token }))
    const saved = yield* Session.saveChanges
    return saved.streams[0].version
  }))

const command = (id: string, token: string) =>
  Effect.map(
    EventStore.writeToAggregate(Ledger, id, (stream) => stream.appendOne(new Entry({ token })), {
      retry: Schedule.recurs(5)
    }),
    (result) => result.version
  )

/**
 * Runs `save` for `n` streams at once with the proxy armed (enough at once for
 * saves to be write-combined), and returns the outcomes, the ledger, and how
 * many connections were cut.
 */
const scenario = (options: {
  readonly mode: Mode
  readonly save: (id: string, token: string) => Effect.Effect<number, unknown, any>
  readonly seeded?: boolean
  readonly blackoutMillis?: number
  /** No fault: the proxy only passes bytes on. */
  readonly unarmed?: boolean
  /** Runs on the scenario's schema before the saves. */
  readonly before?: (schema: string) => Effect.Effect<void, unknown, SqlClient.SqlClient>
}) =>
  Effect.scoped(Effect.gen(function*() {
    const p = yield* proxy
    const schema = `chronicle_lost_${Math.random().toString(36).slice(2, 10)}`
    const ids = Array.from({ length: 48 }, () => newId("ledger"))
    const run = Effect.gen(function*() {
      if (options.before) yield* options.before(schema)
      if (options.seeded) {
        yield* Effect.forEach(ids, (id) => blindAppend(id, newId("seed")), { concurrency: 4, discard: true })
      }
      if (!options.unarmed) p.arm(statementName(schema, "commit_each"), options.mode, options.blackoutMillis)
      return yield* Effect.forEach(ids, (id) => {
        const token = newId("token")
        return options.save(id, token).pipe(
          Effect.timeout("30 seconds"),
          Effect.map((version): Outcome => ({ stream: id, token, result: Either.right(version) })),
          Effect.catchAllCause((cause) =>
            Effect.succeed<Outcome>({
              stream: id,
              token,
              result: Either.left(errorOf(cause._tag === "Fail" ? cause.error : cause._tag === "Die" ? cause.defect : cause))
            })
          )
        )
      }, { concurrency: "unbounded" })
    }).pipe(Effect.provide(storeThrough(schema, p.port)))
    const outcomes = yield* (run as unknown as Effect.Effect<ReadonlyArray<Outcome>>)
    const stored = yield* ledger(schema)
    const tokens = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql.unsafe<{ id: string }>(`SELECT id FROM "${schema}".commits`))
    yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`))
    return { outcomes, stored, cuts: p.cuts(), audit: audit(outcomes, stored), tokens: tokens.map((t) => t.id) }
  })).pipe(Effect.provide(Admin))

/** The audit of a run where every save is accounted for. */
const clean = { lost: 0, doubled: 0, falseFailures: 0, wrongVersion: 0, unknown: 0 }

const failures = (outcomes: ReadonlyArray<Outcome>) =>
  outcomes.flatMap((o) => Either.isLeft(o.result) ? [`${o.result.left._tag}: ${o.result.left.message}`] : [])

describe("PostgreSQL: the answer of a write-combined statement lost", () => {
  it.live("after COMMIT: blind appends are each stored once and reported saved", () =>
    Effect.gen(function*() {
      const { audit, cuts, outcomes } = yield* scenario({ mode: "afterCommit", save: blindAppend })
      assert.strictEqual(cuts, 1)
      assert.deepStrictEqual(failures(outcomes), [])
      assert.deepStrictEqual(audit, clean)
    }), 60_000)

  it.live("after COMMIT: optimistic saves are reported saved, not conflicted", () =>
    Effect.gen(function*() {
      const { audit, cuts, outcomes, stored } = yield* scenario({ mode: "afterCommit", save: optimistic, seeded: true })
      assert.strictEqual(cuts, 1)
      assert.deepStrictEqual(failures(outcomes), [])
      assert.deepStrictEqual(audit, clean)
      assert.strictEqual(stored.length, 2 * outcomes.length)
    }), 60_000)

  it.live("after COMMIT: commands with retry are applied once", () =>
    Effect.gen(function*() {
      const { audit, cuts, outcomes, stored } = yield* scenario({ mode: "afterCommit", save: command, seeded: true })
      assert.strictEqual(cuts, 1)
      assert.deepStrictEqual(failures(outcomes), [])
      assert.deepStrictEqual(audit, clean)
      assert.strictEqual(stored.length, 2 * outcomes.length)
    }), 60_000)

  it.live("before the statement reached the server: the saves go again, alone, and are stored once", () =>
    Effect.gen(function*() {
      const { audit, cuts, outcomes, stored } = yield* scenario({ mode: "beforeSend", save: optimistic, seeded: true })
      assert.strictEqual(cuts, 1)
      assert.deepStrictEqual(failures(outcomes), [])
      assert.deepStrictEqual(audit, clean)
      assert.strictEqual(stored.length, 2 * outcomes.length)
    }), 60_000)

  it.live("when the outcome cannot be found out (server unreachable), the saves say it is unknown; none is doubled", () =>
    Effect.gen(function*() {
      const { audit, cuts, outcomes } = yield* scenario({ mode: "afterCommit", save: blindAppend, blackoutMillis: 8_000 })
      assert.strictEqual(cuts, 1)
      for (const f of failures(outcomes)) assert.match(f, /^EventStoreError: .*unknown/)
      assert.isAbove(audit.unknown, 0)
      assert.deepStrictEqual({ ...audit, unknown: 0 }, clean)
    }), 60_000)

  it.live("commit tokens are written by combined statements only, and pruned once old", () =>
    Effect.gen(function*() {
      const { audit, outcomes, tokens } = yield* scenario({
        mode: "afterCommit",
        unarmed: true,
        save: blindAppend,
        before: (schema) =>
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql.unsafe(`INSERT INTO "${schema}".commits (id, at) VALUES ('old', now() - interval '1 hour')`))
      })
      assert.deepStrictEqual(failures(outcomes), [])
      assert.deepStrictEqual(audit, clean)
      assert.notInclude(tokens, "old")
      // 48 saves at once, 8 of them alone: the rest shared few statements, one token each.
      assert.isAbove(tokens.length, 0)
      assert.isBelow(tokens.length, 10)
    }), 60_000)
})
