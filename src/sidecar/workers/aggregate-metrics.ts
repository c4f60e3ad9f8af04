import type { Registry } from 'prom-client';
import type { Logger } from '../../telemetry/logger.ts';
import { AggregatorRegistry } from '../../telemetry/prom-client.ts';
import type { Answer } from './worker-pool.ts';

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Kinds whose sum only grows: what a worker counted must stay in the sum after it exits. */
const MONOTONIC = new Set(['counter', 'histogram']);

/**
 * /metrics of a sidecar primary: its own registry (certificate, policy
 * persistence, workers, process) plus every worker's, merged by prom-client's
 * AggregatorRegistry (sums, except the gauges that say otherwise, e.g. the
 * certificate expiry is the earliest). Counters stay monotonic across worker
 * restarts: a worker's last answer is kept, and when it exits its counters
 * and histograms join a retired sum. A worker that does not answer in time
 * counts with its last answer rather than dropping out (which would read as
 * a counter reset). Calls a worker counted after the last scrape before it
 * died are lost, as they would be in a single process that died.
 */
export function createAggregatedMetrics(deps: {
  readonly own: Registry;
  /** Every worker's getMetricsAsJSON(). */
  ask(): Promise<Answer[]>;
  readonly logger: Logger;
}): { readonly registry: Pick<Registry, 'metrics' | 'contentType'>; retire(pid: number): void } {
  const live = new Map<number, MetricsJson>();
  const retiredPids = new Set<number>();
  let retired: MetricsJson = [];
  let retiring = Promise.resolve();

  const retire = (pid: number): void => {
    retiredPids.add(pid);
    const last = live.get(pid);
    live.delete(pid);
    if (!last) return;
    const kept = last.filter((m) => MONOTONIC.has(String(m.type)));
    retiring = retiring.then(async () => {
      retired = await AggregatorRegistry.aggregate([retired, kept]).getMetricsAsJSON();
    });
  };

  return {
    retire,
    registry: {
      get contentType() {
        return deps.own.contentType;
      },
      async metrics() {
        const [own, answers] = await Promise.all([deps.own.getMetricsAsJSON(), deps.ask()]);
        for (const answer of answers) {
          if (answer.ok && !retiredPids.has(answer.pid)) live.set(answer.pid, answer.value as MetricsJson);
          else if (!answer.ok && answer.pid !== undefined && !retiredPids.has(answer.pid)) {
            deps.logger.debug({ worker: answer.worker, pid: answer.pid, err: answer.error }, 'worker metrics not answered; using its last answer');
          }
        }
        await retiring;
        return AggregatorRegistry.aggregate([own, retired, ...live.values()]).metrics();
      },
    },
  };
}
