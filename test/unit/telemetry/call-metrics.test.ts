import { AggregatorRegistry, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { DurationHistogram } from '../../../src/telemetry/call-metrics.ts';
import { createSidecarMetrics } from '../../../src/telemetry/metrics.ts';

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// On a bound (le is inclusive), between bounds, above the last one, and tiny.
const OBSERVED: [string, string, number][] = [
  ['inbound', 'orders.shop', 0.001],
  ['inbound', 'orders.shop', 0.0011],
  ['inbound', 'orders.shop', 0.0004],
  ['outbound', 'orders.shop', 31],
  ['outbound', 'unknown', 0.25],
  ['inbound', 'orders.shop', 0.001],
];

function promClientText(): Promise<string> {
  const registry = new Registry();
  const histogram = new Histogram({ name: 'd_seconds', help: 'h', labelNames: ['direction', 'destination_service'], buckets: BOUNDS, registers: [registry] });
  for (const [direction, destination, s] of OBSERVED) histogram.observe({ direction, destination_service: destination }, s);
  return registry.metrics();
}

function ownRegistry(observed = OBSERVED): Registry {
  const registry = new Registry();
  const histogram = new DurationHistogram('d_seconds', 'h', BOUNDS);
  histogram.registerIn(registry);
  for (const [direction, destination, s] of observed) histogram.observe(direction, destination, s);
  return registry;
}

describe('per-call metrics', () => {
  it('exposes the duration histogram exactly as prom-client would, bucket by bucket', async () => {
    expect(await ownRegistry().metrics()).toBe(await promClientText());
  });

  it('sums the histogram across worker processes as prom-client aggregates its own', async () => {
    const one = ownRegistry(OBSERVED.slice(0, 3));
    const two = ownRegistry(OBSERVED.slice(3));
    const merged = await AggregatorRegistry.aggregate([await one.getMetricsAsJSON(), await two.getMetricsAsJSON()]).metrics();
    const expected = await AggregatorRegistry.aggregate([await ownRegistry().getMetricsAsJSON()]).metrics();
    expect(merged).toBe(expected);
    expect(merged).toContain('d_seconds_bucket{le="0.001",direction="inbound",destination_service="orders.shop"} 3');
    expect(merged).toContain('d_seconds_count{direction="outbound",destination_service="orders.shop"} 1');
  });

  it('counts each call once in requests_total however often it is scraped', async () => {
    const metrics = createSidecarMetrics({ defaultMetrics: false });
    metrics.calls.record('inbound', 'spiffe://mesh/ns/shop/sa/frontend', 'orders.shop', 200, '', 0.002);
    metrics.calls.record('inbound', 'spiffe://mesh/ns/shop/sa/frontend', 'orders.shop', 200, '', 0.003);
    metrics.calls.count('inbound', '', '', 400, 'request.malformed');
    const line = 'meshgate_requests_total{direction="inbound",source_principal="spiffe://mesh/ns/shop/sa/frontend",destination_service="orders.shop",response_code="200",reason=""}';
    expect(await metrics.registry.metrics()).toContain(`${line} 2`);
    expect(await metrics.registry.metrics()).toContain(`${line} 2`);
    metrics.calls.record('inbound', 'spiffe://mesh/ns/shop/sa/frontend', 'orders.shop', 200, '', 0.004);
    const text = await metrics.registry.metrics();
    expect(text).toContain(`${line} 3`);
    expect(text).toContain('meshgate_requests_total{direction="inbound",source_principal="",destination_service="",response_code="400",reason="request.malformed"} 1');
    expect(text).toContain('meshgate_request_duration_seconds_count{direction="inbound",destination_service="orders.shop"} 3');
    expect(text).toContain('meshgate_request_duration_seconds_bucket{le="0.0025",direction="inbound",destination_service="orders.shop"} 1');
  });

  it('leaves a duration that is not a number out rather than poisoning the sum', async () => {
    const registry = ownRegistry([
      ['inbound', 'a', Number.NaN],
      ['inbound', 'a', 0.01],
    ]);
    expect(await registry.metrics()).toContain('d_seconds_sum{direction="inbound",destination_service="a"} 0.01');
  });
});
