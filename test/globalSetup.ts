/**
 * Gives every test file a PostgreSQL URL: `DATABASE_URL` when set, otherwise an
 * embedded PostgreSQL started once for the whole run.
 */
import type { TestProject } from "vitest/node"
import { startEmbedded } from "../examples/postgres.js"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
  }
}

export default async function setup(project: TestProject) {
  const fromEnv = process.env.DATABASE_URL
  if (fromEnv !== undefined && fromEnv !== "") {
    project.provide("databaseUrl", fromEnv)
    return
  }
  const server = await startEmbedded()
  project.provide("databaseUrl", server.url)
  return () => server.stop()
}
