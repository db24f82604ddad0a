import { conformance } from "./conformance.js"
import { locking } from "./locking.js"
import { pgStore } from "./support.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  conformance(pgStore(), lifecycle)
}
// Every Live behaviour holds as well with states kept between sessions (a small cache, so that it also evicts).
conformance(pgStore({ liveStateCache: 8 }), "Live")
locking(pgStore())
