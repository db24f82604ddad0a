import * as path from "node:path"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    alias: { "effect-chronicle": path.resolve(__dirname, "src/index.ts") }
  },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Test files share one PostgreSQL; each uses its own schema, so files can run in parallel.
    fileParallelism: true
  }
})
