/**
 * What the command line prints: tables, events, progress. Pure text, so the
 * handlers stay testable and the output stable.
 *
 * @internal
 */
import type { EventEnvelope } from "../../EventEnvelope.js"
import type * as ProjectionDaemon from "../../ProjectionDaemon.js"
import type * as Storage from "../../Storage.js"

/** @internal rows as a table: a header line, then columns padded to their widest cell. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, right: ReadonlySet<number> = new Set()): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => right.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i])).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/** @internal a page of streams. */
export const streams = (page: ReadonlyArray<Storage.StreamInfo>): string =>
  table(
    ["STREAM", "TYPE", "VERSION", "CREATED", "UPDATED", "ARCHIVED"],
    page.map((s) => [s.streamId, s.streamType, String(s.version), s.createdAt.toISOString(), s.updatedAt.toISOString(), s.archived ? "yes" : ""]),
    new Set([2])
  )

const indent = (text: string, by: string) => text.split("\n").map((line) => by + line).join("\n")

/** @internal one event: version, type, time, then its data (and metadata, if any) as indented JSON. */
export const event = (envelope: EventEnvelope<unknown>): string => {
  const head = `#${envelope.version}  ${envelope.type}  ${envelope.timestamp.toISOString()}  (sequence ${envelope.sequence})`
  const metadata = {
    ...(envelope.correlationId === undefined ? {} : { correlationId: envelope.correlationId }),
    ...(envelope.causationId === undefined ? {} : { causationId: envelope.causationId }),
    ...(Object.keys(envelope.headers ?? {}).length === 0 ? {} : { headers: envelope.headers })
  }
  const lines = [head, indent(JSON.stringify(envelope.data, null, 2), "    ")]
  if (Object.keys(metadata).length > 0) lines.push(indent(`metadata ${JSON.stringify(metadata, null, 2)}`, "    "))
  return lines.join("\n")
}

/** @internal an event as `--json` prints it. */
export const eventJson = (envelope: EventEnvelope<unknown>) => ({
  streamId: envelope.streamId,
  version: envelope.version,
  sequence: envelope.sequence,
  type: envelope.type,
  timestamp: envelope.timestamp.toISOString(),
  tenantId: envelope.tenantId,
  data: envelope.data,
  correlationId: envelope.correlationId,
  causationId: envelope.causationId,
  headers: envelope.headers
})

/** @internal the daemon's status, one row per projection and subscription. */
export const status = (rows: ReadonlyArray<ProjectionDaemon.Status>): string =>
  table(
    ["KIND", "NAME", "VERSION", "POSITION", "CHECKPOINT", "HEAD", "LAG", "ERROR"],
    rows.map((s) => [s.kind, s.name, String(s.version), s.position, String(s.checkpoint), String(s.head), String(s.lag), s.error ?? "-"]),
    new Set([2, 4, 5, 6])
  )

const percent = (p: ProjectionDaemon.RebuildProgress) =>
  p.total === 0 ? 100 : Math.min(100, Math.floor((p.processed / p.total) * 100))

/** @internal a progress bar of `width` cells. */
export const bar = (p: ProjectionDaemon.RebuildProgress, width = 30): string => {
  const filled = p.total === 0 ? width : Math.min(width, Math.round((p.processed / p.total) * width))
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(percent(p)).padStart(3)}% ${p.processed}/${p.total}`
}

/** @internal a progress line, for output that is not a terminal (one line per batch). */
export const progressLine = (name: string, p: ProjectionDaemon.RebuildProgress): string =>
  `rebuild ${name}: ${p.processed}/${p.total} events (${percent(p)}%)`
