import { subscriptions } from "./subscriptions.js"
import { memoryStore, pgStore } from "./support.js"

subscriptions(memoryStore)
subscriptions(pgStore())
