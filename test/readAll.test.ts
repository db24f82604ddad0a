import { readAll } from "./readAll.js"
import { memoryStore, pgStore } from "./support.js"

readAll(memoryStore)
readAll(pgStore())
