import { memoryStore, pgStore } from "./support.js"
import { tenancy } from "./tenancy.js"

tenancy(memoryStore)
tenancy(pgStore())
