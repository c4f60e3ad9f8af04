import type { Registry } from 'prom-client';
import { collectDefaultMetrics } from './prom-client.ts';

/**
 * How often the event-loop delay is sampled for nodejs_eventloop_lag_*.
 * prom-client's default, 10 ms, wakes an idle process 100 times a second:
 * half of an idle sidecar's CPU (0.5% of a core of ~1%), paid by every pod
 * of a fleet. Sampled every 100 ms, a delay still shows: a blocked loop
 * delays the next sample whatever the period, and a scrape every 15 s still
 * sees 150 samples.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/** The process_* and nodejs_* metrics every role exposes. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
}
