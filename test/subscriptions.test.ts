import * as Layer from "effect/Layer"
import { subscriptions } from "./subscriptions.js"
import { memoryStore, pgStore } from "./support.js"

// On the in-memory store the second daemon shares the one store; on PostgreSQL it has a pool of its own.
subscriptions(memoryStore, () => Layer.empty as unknown as Layer.Layer<any, any, never>)
