import { daemon } from "./daemon.js"
import { memoryStore, pgStore } from "./support.js"

daemon(memoryStore)
daemon(pgStore())
