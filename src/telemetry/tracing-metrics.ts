import type { Registry } from 'prom-client';
import { Counter } from './prom-client.ts';
import type { Tracing } from './tracing.ts';

/**
 * `meshgate_trace_spans_total{result}` on a role's registry: the degraded
 * modes of tracing (collector down, queue full) as a stat, read at scrape
 * time so spans cost no metric bookkeeping.
 */
export function registerTracingMetrics(registry: Registry, tracing: Tracing): void {
  new Counter({
    name: 'meshgate_trace_spans_total',
    help: 'Sampled spans by export result: exported, failed (the collector refused or did not answer), dropped (export queue full).',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      const stats = tracing.stats();
      this.reset();
      this.inc({ result: 'exported' }, stats.exportedSpans);
      this.inc({ result: 'failed' }, stats.failedSpans);
      this.inc({ result: 'dropped' }, stats.droppedSpans);
    },
  });
}
