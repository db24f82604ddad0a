import { projections } from "./projections.js"
import { memoryStore, pgStore } from "./support.js"

projections(memoryStore)
projections(pgStore())
