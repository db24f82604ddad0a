import { conformance } from "./conformance.js"
import { memoryStore } from "./support.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  conformance(memoryStore, lifecycle)
}
