/**
 * What each command does, as Effect programs over the store (no command-line
 * parsing here): so they run the same from the bin and in-process in tests,
 * on either store.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as EventStore from "../../EventStore.js"
import * as Projection from "../../Projection.js"
import * as ProjectionDaemon from "../../ProjectionDaemon.js"
import * as Session from "../../Session.js"
import { currentTenant } from "../store.js"
import { NoRegistrationsError, StreamNotFoundError, UnknownProjectionError } from "./errors.js"
import * as Render from "./render.js"

/** @internal where the commands print: lines, and (on a terminal) text redrawn in place. */
export interface Output {
  /** Whether output is an interactive terminal (a progress bar is redrawn in place there). */
  readonly tty: boolean
  readonly line: (text: string) => Effect.Effect<void>
  readonly write: (text: string) => Effect.Effect<void>
}

/** @internal the process's standard output. */
export const stdout: Output = {
  tty: process.stdout.isTTY === true,
  line: (text) => Effect.sync(() => void process.stdout.write(text + "\n")),
  write: (text) => Effect.sync(() => void process.stdout.write(text))
}

/** @internal `streams list`. */
export const listStreams = (
  out: Output,
  options: { readonly type?: string | undefined; readonly limit?: number | undefined; readonly page?: number | undefined; readonly after?: string | undefined; readonly json?: boolean }
) =>
  Effect.gen(function*() {
    const page = yield* EventStore.listStreams({ streamType: options.type, limit: options.limit, page: options.page, after: options.after })
    if (options.json === true) return yield* out.line(JSON.stringify(page))
    if (page.streams.length === 0) {
      return yield* out.line(options.type === undefined ? "No streams." : `No streams of type "${options.type}".`)
    }
    yield* out.line(Render.streams(page.streams))
    if (page.more) {
      const last = page.streams[page.streams.length - 1].streamId
      yield* out.line(`More streams follow: --after ${last}${options.after === undefined ? ` or --page ${(options.page ?? 1) + 1}` : ""}`)
    }
  })

/** @internal `streams show <id>`. */
export const showStream = (out: Output, streamId: string, options: { readonly json?: boolean }) =>
  Effect.gen(function*() {
    const events = yield* Session.run(Session.readStream(streamId))
    if (events.length === 0) return yield* new StreamNotFoundError({ streamId, tenantId: yield* FiberRef.get(currentTenant) })
    if (options.json === true) return yield* out.line(JSON.stringify(events.map(Render.eventJson), null, 2))
    const tenant = events[0].tenantId
    yield* out.line(`Stream ${streamId} (tenant ${tenant}): ${events.length} event${events.length === 1 ? "" : "s"}, version ${events[events.length - 1].version}`)
    for (const envelope of events) yield* out.line(Render.event(envelope))
  })

/** @internal `projections status`. */
export const status = (out: Output, options: { readonly json?: boolean }) =>
  Effect.gen(function*() {
    const rows = yield* ProjectionDaemon.status
    if (options.json === true) return yield* out.line(JSON.stringify(rows))
    if (rows.length === 0) {
      return yield* out.line(
        "No Async projection or subscription is registered. Projections and subscriptions are the application's: " +
          "build your own bin with ChronicleCli.run({ registrations: [...] }) from \"effect-chronicle/cli\"."
      )
    }
    yield* out.line(Render.status(rows))
  })

/** @internal the registered projection a rebuild names: Inline or Async (a Live one stores nothing), its newest version by default. */
export const findProjection = (name: string, version: number | undefined) =>
  Effect.flatMap(EventStore.EventStore, (store) => {
    const stored = store.projections.all.filter((p) => p.lifecycle !== "Live")
    const found = stored
      .filter((p) => p.name === name && (version === undefined || p.version === version))
      .sort((a, b) => b.version - a.version)[0]
    return found !== undefined
      ? Effect.succeed<Projection.Projection>(found)
      : Effect.fail(new UnknownProjectionError({ name, version, known: [...new Set(stored.map((p) => `${p.name} v${p.version}`))] }))
  })

/** @internal `projections rebuild <name>`: a bar redrawn in place on a terminal, a line per batch elsewhere. */
export const rebuild = (out: Output, name: string, options: { readonly version?: number | undefined }) =>
  Effect.gen(function*() {
    const projection = yield* findProjection(name, options.version)
    const label = `${projection.name} v${projection.version}`
    const last = yield* ProjectionDaemon.rebuild(projection).pipe(
      Stream.tap((p) => out.tty ? out.write(`\r${label} ${Render.bar(p)}`) : out.line(Render.progressLine(label, p))),
      Stream.runLast
    )
    if (out.tty) yield* out.write("\n")
    const processed = Option.match(last, { onNone: () => 0, onSome: (p) => p.processed })
    yield* out.line(`Rebuilt ${label}: ${processed} event${processed === 1 ? "" : "s"} replayed.`)
  })

/**
 * @internal `daemon`: runs the projection daemon until interrupted (SIGINT or
 * SIGTERM); it then stops after its last complete batch, whose documents and
 * position are stored together, and the command ends.
 */
export const daemon = (out: Output, options?: ProjectionDaemon.Options) =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const { async, subscriptions } = store.projections
    if (async.length === 0 && subscriptions.length === 0) return yield* new NoRegistrationsError()
    const names = [...async.map((p) => `${p.name} v${p.version}`), ...subscriptions.map((s) => `${s.name} (subscription)`)]
    return yield* Effect.scoped(Effect.gen(function*() {
      yield* Layer.build(ProjectionDaemon.layer(options))
      yield* out.line(`Projection daemon running: ${names.join(", ")}. Stop it with Ctrl-C (SIGINT) or SIGTERM.`)
      return yield* Effect.never
    })).pipe(
      // After the daemon's scope closed: every worker has stored its last batch.
      Effect.onInterrupt(() => out.line("Projection daemon stopped: positions stored."))
    )
  })
