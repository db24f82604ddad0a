import { conformance } from "./conformance.js"
import { locking } from "./locking.js"
import { memoryStore, memoryStoreWith } from "./support.js"

for (const lifecycle of ["Live", "Inline", "Async"] as const) {
  conformance(memoryStore, lifecycle)
}
// Every Live behaviour holds as well with states kept between sessions (a small cache, so that it also evicts).
conformance(memoryStoreWith({ liveStateCache: 8 }), "Live")
locking(memoryStore)
