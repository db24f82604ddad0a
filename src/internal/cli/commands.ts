/**
 * The command tree, on `@effect/cli`: options and arguments parsed into the
 * handlers' inputs, each command run against the store its connection options
 * name, inside the tenant `--tenant` names.
 *
 * @internal
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { EventStoreError } from "../../Errors.js"
import * as EventStore from "../../EventStore.js"
import * as EventStorePg from "../../EventStorePg.js"
import type * as ProjectionDaemon from "../../ProjectionDaemon.js"
import type * as Projections from "../../Projections.js"
import { quoteSchema } from "../../pg/statements.js"
import { MissingDatabaseUrlError } from "./errors.js"
import * as Handlers from "./handlers.js"

/** @internal what the global options say: where the store is, and in which tenant to work. */
export interface Connection {
  readonly databaseUrl: Option.Option<Redacted.Redacted>
  readonly schema: string
  readonly tenant: Option.Option<string>
}

/** @internal what the commands run with. */
export interface Setup {
  readonly name: string
  readonly projections: Layer.Layer<Projections.Projections, unknown>
  /** A store of the application's making; by default the PostgreSQL store the connection options name. */
  readonly store: ((connection: Connection) => Layer.Layer<EventStore.EventStore, unknown, Projections.Projections>) | undefined
  readonly daemon: ProjectionDaemon.Options | undefined
  readonly output: Handlers.Output
}

const connection = {
  databaseUrl: Options.redacted("database-url").pipe(
    Options.withFallbackConfig(Config.redacted("DATABASE_URL")),
    Options.withDescription("PostgreSQL connection URL (default: the DATABASE_URL environment variable)"),
    Options.optional
  ),
  schema: Options.text("schema").pipe(
    Options.withDescription("PostgreSQL schema of the store's tables"),
    Options.withDefault("chronicle")
  ),
  tenant: Options.text("tenant").pipe(
    Options.withDescription("run in this tenant (default: the default tenant, *DEFAULT*)"),
    Options.optional
  )
}
const json = Options.boolean("json").pipe(Options.withDescription("print JSON instead of text"))

const pgClient = (c: Connection): Layer.Layer<SqlClient.SqlClient, MissingDatabaseUrlError | EventStoreError> =>
  // An empty DATABASE_URL (as `DATABASE_URL= cmd` sets it) names no database either.
  Option.match(Option.filter(c.databaseUrl, (url) => Redacted.value(url).trim() !== ""), {
    onNone: () => Layer.fail(new MissingDatabaseUrlError()),
    onSome: (url) =>
      PgClient.layer({ url }).pipe(
        Layer.mapError((cause) => new EventStoreError({ message: `Connecting to the database failed: ${cause.message}`, cause }))
      )
  })

const storeOf = (setup: Setup, c: Connection): Layer.Layer<EventStore.EventStore, unknown> =>
  (setup.store === undefined
    ? EventStorePg.layer({ schema: c.schema }).pipe(Layer.provide(pgClient(c)))
    : setup.store(c)).pipe(Layer.provide(setup.projections))

/** Runs a handler against the store, in the tenant asked for. */
const inStore = <A, E>(setup: Setup, c: Connection, effect: Effect.Effect<A, E, EventStore.EventStore>) =>
  Option.match(c.tenant, { onNone: () => effect, onSome: (tenant) => EventStore.withTenant(effect, tenant) }).pipe(
    Effect.provide(storeOf(setup, c))
  )

const applied = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const [table] = yield* sql.unsafe<{ readonly present: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS present`, [
      `${quoteSchema(schema)}.migrations`
    ])
    if (!table.present) return []
    return yield* sql.unsafe<{ readonly id: number; readonly name: string }>(
      `SELECT id, name FROM ${quoteSchema(schema)}.migrations ORDER BY id`
    )
  }).pipe(Effect.mapError((cause) => new EventStoreError({ message: "Reading the applied migrations failed", cause })))

const migrate = (setup: Setup) =>
  Command.make("migrate", connection, (c) => {
    if (setup.store !== undefined) {
      return inStore(setup, c, setup.output.line("Store ready: it migrated its tables as it started."))
    }
    return Effect.gen(function*() {
      const before = new Set((yield* applied(c.schema)).map((m) => m.id))
      // The store creates and migrates its tables as it starts: building it is the migration.
      yield* Effect.scoped(Layer.build(EventStorePg.layer({ schema: c.schema }).pipe(Layer.provide(setup.projections))))
      const after = yield* applied(c.schema)
      const now = after.filter((m) => !before.has(m.id))
      const newest = after[after.length - 1]
      yield* setup.output.line(
        now.length === 0
          ? `Schema "${c.schema}" is up to date (${after.length} migrations, newest ${newest.id} ${newest.name}).`
          : `Migrated schema "${c.schema}": applied ${now.map((m) => `${m.id} ${m.name}`).join(", ")} (${after.length} migrations).`
      )
    }).pipe(Effect.provide(pgClient(c)))
  }).pipe(Command.withDescription("create the store's tables in the schema, or migrate them to this version"))

const streamsList = (setup: Setup) =>
  Command.make("list", {
    ...connection,
    json,
    type: Options.text("type").pipe(Options.withDescription("only streams of this type (aggregate name)"), Options.optional),
    limit: Options.integer("limit").pipe(Options.withDescription("streams per page"), Options.withDefault(20)),
    page: Options.integer("page").pipe(Options.withDescription("page number, from 1"), Options.optional),
    after: Options.text("after").pipe(Options.withDescription("only streams older than this stream id (the last of the previous page)"), Options.optional)
  }, (c) =>
    inStore(setup, c, Handlers.listStreams(setup.output, {
      type: Option.getOrUndefined(c.type),
      limit: c.limit,
      page: Option.getOrUndefined(c.page),
      after: Option.getOrUndefined(c.after),
      json: c.json
    }))).pipe(Command.withDescription("list streams, newest first (by their first event), a page at a time"))

const streamsShow = (setup: Setup) =>
  Command.make("show", { ...connection, json, id: Args.text({ name: "stream-id" }) }, (c) =>
    inStore(setup, c, Handlers.showStream(setup.output, c.id, { json: c.json }))).pipe(
      Command.withDescription("print a stream's events: version, type, time and data")
    )

const projectionsStatus = (setup: Setup) =>
  Command.make("status", { ...connection, json }, (c) => inStore(setup, c, Handlers.status(setup.output, { json: c.json }))).pipe(
    Command.withDescription("per Async projection and subscription: checkpoint, head of the log, lag, error")
  )

const projectionsRebuild = (setup: Setup) =>
  Command.make("rebuild", {
    ...connection,
    name: Args.text({ name: "projection" }),
    version: Options.integer("version").pipe(Options.withDescription("the projection's version (default: the newest)"), Options.optional)
  }, (c) =>
    inStore(setup, c, Handlers.rebuild(setup.output, c.name, { version: Option.getOrUndefined(c.version) }))).pipe(
      Command.withDescription("replay a projection from the start, showing its progress")
    )

const daemon = (setup: Setup) =>
  Command.make("daemon", connection, (c) => inStore(setup, c, Handlers.daemon(setup.output, setup.daemon))).pipe(
    Command.withDescription("run the projection daemon until SIGINT or SIGTERM, then stop after its last batch")
  )

/** @internal the whole command tree. */
export const root = (setup: Setup) =>
  Command.make(setup.name).pipe(
    Command.withDescription("Operate an effect-chronicle event store"),
    Command.withSubcommands([
      migrate(setup),
      Command.make("streams").pipe(
        Command.withDescription("look at streams"),
        Command.withSubcommands([streamsList(setup), streamsShow(setup)])
      ),
      Command.make("projections").pipe(
        Command.withDescription("projections and subscriptions"),
        Command.withSubcommands([projectionsStatus(setup), projectionsRebuild(setup)])
      ),
      daemon(setup)
    ])
  )
