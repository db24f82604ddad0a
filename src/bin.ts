#!/usr/bin/env node
/**
 * The `effect-chronicle` bin: the command line with no registrations of its
 * own (an application's projections and subscriptions need its own bin, over
 * `ChronicleCli.run`). Its peers are optional dependencies of the library, so
 * it checks for them first and names what to install.
 *
 * @since 0.2.0
 */
const peers = ["@effect/cli", "@effect/printer", "@effect/printer-ansi", "@effect/platform-node"] as const

const missing: Array<string> = []
for (const name of peers) {
  try {
    // Resolving (not loading) finds a missing package cheaply.
    import.meta.resolve(name)
  } catch {
    missing.push(name)
  }
}
if (missing.length > 0) {
  process.stderr.write(
    `effect-chronicle: the command line needs ${missing.join(", ")}, not installed. Install them with:\n` +
      `  npm install @effect/cli@^0.77 @effect/printer@^0.51 @effect/printer-ansi@^0.51 @effect/platform-node@^0.108\n`
  )
  process.exit(1)
}
const { run } = await import("./ChronicleCli.js")
run()
