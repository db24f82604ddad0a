/**
 * The projection daemon's metrics, one series per projection version (tagged
 * with `projection` and `version`); `ProjectionDaemon.metrics` is their face.
 *
 * @internal
 */
import * as Metric from "effect/Metric"
import type * as Storage from "../Storage.js"

/** Events processed by the daemon, per projection. */
export const processed = Metric.counter("chronicle_projection_events_processed", { incremental: true })
/** Sequence of each projection's checkpoint. */
export const checkpoint = Metric.gauge("chronicle_projection_checkpoint")
/** Events each projection has yet to process, as of the last status. */
export const lag = Metric.gauge("chronicle_projection_lag")
/** Failures of each projection's worker (each one is retried). */
export const failures = Metric.counter("chronicle_projection_failures", { incremental: true })

/** @internal `metric`'s series of one projection version. */
export const of = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  ref: Storage.ProjectionRef
): Metric.Metric<Type, In, Out> => Metric.tagged(Metric.tagged(metric, "projection", ref.name), "version", String(ref.version))
