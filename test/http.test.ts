import { http } from "./http.js"
import { memoryStore, pgStore } from "./support.js"

http(memoryStore)
http(pgStore())
