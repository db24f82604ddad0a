/**
 * The `effect-chronicle/cli` entry point: the command line, apart from the
 * package root so that the library never needs `@effect/cli` or
 * `@effect/platform-node`.
 *
 * @since 0.2.0
 */

/** @since 0.2.0 */
export * as ChronicleCli from "./ChronicleCli.js"
