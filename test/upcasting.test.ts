import { memoryStore, pgStore } from "./support.js"
import { upcasting } from "./upcasting.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  upcasting(memoryStore, lifecycle)
  upcasting(pgStore(), lifecycle)
}
