import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatedMetrics } from '../../../../src/sidecar/workers/aggregate-metrics.ts';
import type { Answer } from '../../../../src/sidecar/workers/worker-pool.ts';
import { createLogger } from '../../../../src/telemetry/logger.ts';
import { parsePrometheusText, sumOf } from '../../../helpers/prom-text.ts';

/** A worker's registry: a call counter and a certificate-expiry gauge (earliest wins, as in telemetry/metrics.ts). */
function workerRegistry(calls: number, expiry: number) {
  const registry = new Registry();
  new Counter({ name: 'calls_total', help: 'calls', registers: [registry] }).inc(calls);
  new Gauge({ name: 'expiry', help: 'expiry', registers: [registry], aggregator: 'min' }).set(expiry);
  return registry;
}

function setup() {
  const own = new Registry();
  new Counter({ name: 'calls_total', help: 'calls', registers: [own] });
  const answers = new Map<number, Answer>();
  const aggregated = createAggregatedMetrics({ own, ask: async () => [...answers.values()], logger: createLogger({ level: 'silent', name: 'test' }) });
  const answer = async (worker: number, pid: number, registry: Registry | undefined) =>
    answers.set(worker, registry ? { worker, pid, ok: true, value: await registry.getMetricsAsJSON() } : { worker, pid, ok: false, error: 'no answer within 2000 ms' });
  const scrape = async () => parsePrometheusText(await aggregated.registry.metrics());
  return { aggregated, answers, answer, scrape };
}

describe("a sidecar primary's /metrics", () => {
  it('sums the workers counters and takes the earliest certificate expiry', async () => {
    const { answer, scrape } = setup();
    await answer(1, 101, workerRegistry(3, 2000));
    await answer(2, 102, workerRegistry(4, 1000));
    const metrics = await scrape();
    expect(sumOf(metrics, 'calls_total')).toBe(7);
    expect(sumOf(metrics, 'expiry')).toBe(1000);
  });

  it('counts a worker that does not answer with its last answer, so its counters do not dip', async () => {
    const { answer, scrape } = setup();
    await answer(1, 101, workerRegistry(3, 2000));
    await answer(2, 102, workerRegistry(4, 2000));
    await scrape();
    await answer(2, 102, undefined);
    expect(sumOf(await scrape(), 'calls_total')).toBe(7);
  });

  it("keeps a dead worker's counters (not its gauges) in the sums, and ignores a late answer of it", async () => {
    const { aggregated, answers, answer, scrape } = setup();
    await answer(1, 101, workerRegistry(3, 2000));
    await answer(2, 102, workerRegistry(4, 1000));
    await scrape();
    aggregated.retire(102);
    await answer(2, 103, workerRegistry(1, 2000)); // its replacement
    let metrics = await scrape();
    expect(sumOf(metrics, 'calls_total')).toBe(3 + 4 + 1);
    expect(sumOf(metrics, 'expiry')).toBe(2000);
    answers.set(9, { worker: 2, pid: 102, ok: true, value: await workerRegistry(50, 0).getMetricsAsJSON() });
    metrics = await scrape();
    expect(sumOf(metrics, 'calls_total')).toBe(8);
  });
});
