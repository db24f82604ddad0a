import { streamList } from "./streamList.js"
import { memoryStore, pgStore } from "./support.js"

streamList(memoryStore)
streamList(pgStore())
