// Loaded with --import: makes @effect/cli and @effect/printer unresolvable, as when they are not installed.
import { register } from "node:module"

register("data:text/javascript," + encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (specifier === "@effect/cli" || specifier === "@effect/printer") {
    const error = new Error("Cannot find package '" + specifier + "'")
    error.code = "ERR_MODULE_NOT_FOUND"
    throw error
  }
  return next(specifier, context)
}`))
