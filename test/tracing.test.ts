import { memoryStore, pgStore } from "./support.js"
import { tracing } from "./tracing.js"

tracing(memoryStore)
tracing(pgStore())
