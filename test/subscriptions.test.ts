import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { EventStorePg, Projections } from "effect-chronicle"
import { registrations, subscriptions } from "./subscriptions.js"
import { memoryStore, pgClient, pgStore, ScratchSchema } from "./support.js"

// On the in-memory store the second daemon shares the one store; on PostgreSQL
// it has a store and a pool of its own on the same schema, as another node would.
subscriptions(memoryStore, () => Layer.empty as unknown as Layer.Layer<any, any, never>)
subscriptions(pgStore(), () =>
  Layer.unwrapEffect(Effect.map(ScratchSchema, (schema) =>
    EventStorePg.layer({ schema }).pipe(
      Layer.provideMerge(Projections.layer(registrations)),
      Layer.provideMerge(pgClient())
    ))) as unknown as Layer.Layer<any, any, never>)
