import { conformance } from "./conformance.js"
import { pgStore } from "./support.js"

conformance(pgStore())
