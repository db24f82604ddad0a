import { conformance } from "./conformance.js"
import { pgStore } from "./support.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  conformance(pgStore(), lifecycle)
}
