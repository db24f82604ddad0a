import { conformance } from "./conformance.js"
import { memoryStore } from "./support.js"

conformance(memoryStore)
