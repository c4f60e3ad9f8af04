import type http from 'node:http';
import { Agent, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import { TRACING_OFF_SETTINGS } from '../../../src/config/telemetry-schema.ts';
import { systemClock } from '../../../src/core/clock.ts';
import { createOutboundStack } from '../../../src/outbound/outbound-stack.ts';
import type { ServiceRegistry } from '../../../src/outbound/service-registry.ts';
import { createServiceRegistry } from '../../../src/outbound/service-registry.ts';
import { createAccessLog } from '../../../src/telemetry/access-log.ts';
import { createSidecarMetrics } from '../../../src/telemetry/metrics.ts';
import { tracingOff } from '../../../src/telemetry/tracing.ts';
import { deferAfterEach } from '../../helpers/cleanup.ts';
import { captureLogs } from '../../helpers/log-capture.ts';
import type { TestServer } from '../../helpers/servers.ts';
import { answer, startHttpServer } from '../../helpers/servers.ts';

/*
 * The outbound stack on its own, in process: a node:http server running
 * createOutboundStack over a real service registry (clusters, balancers,
 * retry budgets) and real upstreams on loopback. Each case asserts what the
 * app got, the access log line of the call, and for retried calls that the
 * cluster's retry budget has no slot left taken.
 */

const defer = deferAfterEach();

async function upstream(handler: http.RequestListener): Promise<TestServer> {
  const server = await startHttpServer(handler);
  defer(() => server.close());
  return server;
}

interface Stack {
  readonly registry: ServiceRegistry;
  readonly log: Array<Record<string, unknown>>;
  call(path: string, headers: Record<string, string>): Promise<{ status: number; reason: string | undefined; body: string }>;
}

/** An outbound stack for workload frontend.shop over these services (the sidecar config's `services` section). */
async function outboundStack(services: unknown[]): Promise<Stack> {
  const config = sidecarConfigSchema.parse({
    workload: { service: 'frontend', namespace: 'shop' },
    inbound: { app: 'http://127.0.0.1:1' },
    mtls: { mode: 'DISABLE' },
    services,
  });
  const registry = createServiceRegistry(config.services, { clock: systemClock, random: () => 0, idleTimeoutMs: 5_000 });
  const { logger, lines: log } = captureLogs({ name: 'sidecar' });
  const handler = createOutboundStack({
    workload: config.workload,
    registry,
    idleTimeoutMs: 5_000,
    telemetry: {
      clock: systemClock,
      metrics: createSidecarMetrics({ defaultMetrics: false }),
      accessLog: createAccessLog(logger, { enabled: true, sampling: 1, random: () => 0 }),
      tracing: tracingOff(TRACING_OFF_SETTINGS),
      requestMetrics: true,
    },
    random: () => 0,
  });
  defer(() => Promise.all(registry.services().map((s) => s.cluster.close())));
  const { url } = await upstream(handler);
  const agent = new Agent();
  defer(() => agent.destroy());
  return {
    registry,
    log,
    async call(path, headers) {
      const res = await request(`${url}${path}`, { dispatcher: agent, headers });
      const body = await res.body.text();
      return { status: res.statusCode, reason: res.headers['x-meshgate-reason'] as string | undefined, body };
    },
  };
}

/** Service orders.shop, round robin over `endpoints` in order, with `routes`. */
const roundRobinOrders = (endpoints: TestServer[], routes: unknown[]) => ({
  name: 'orders',
  namespace: 'shop',
  loadBalancer: 'round_robin',
  endpoints: endpoints.map((e) => ({ address: e.address })),
  routes,
});

/** The access log line of the only call made; it is written once the call is recorded, after the reply. */
async function lastCall(stack: Stack): Promise<Record<string, unknown>> {
  const lines = () => stack.log.filter((l) => l.log === 'access');
  await expect.poll(() => lines().length, { timeout: 2_000 }).toBe(1);
  return lines()[0]!;
}

describe('outbound stack', () => {
  it('answers 404 route.not_found for an authority the registry does not know', async () => {
    const stack = await outboundStack([]);
    expect(await stack.call('/x', { host: 'nowhere' })).toMatchObject({ status: 404, reason: 'route.not_found' });
    expect(await lastCall(stack)).toMatchObject({ status: 404, reason: 'route.not_found', direction: 'outbound' });
  });

  it('answers 404 route.not_found when no route of the service matches', async () => {
    const orders = await upstream(answer(200, 'ok'));
    const stack = await outboundStack([{ name: 'orders', namespace: 'shop', endpoints: [{ address: orders.address }], routes: [{ name: 'api', match: { path: { prefix: '/api' } } }] }]);
    expect(await stack.call('/other', { host: 'orders' })).toMatchObject({ status: 404, reason: 'route.not_found' });
    expect(orders.hits()).toBe(0);
  });

  it('answers 404 route.unknown_version for a pinned version the service does not have', async () => {
    const orders = await upstream(answer(200, 'ok'));
    const stack = await outboundStack([{ name: 'orders', namespace: 'shop', endpoints: [{ address: orders.address }] }]);
    expect(await stack.call('/x', { host: 'orders', 'x-meshgate-version': 'v9' })).toMatchObject({ status: 404, reason: 'route.unknown_version' });
    expect(orders.hits()).toBe(0);
  });

  it('answers 503 upstream.no_endpoint for a known service with no endpoint', async () => {
    const stack = await outboundStack([{ name: 'orders', namespace: 'shop', endpoints: [{ address: '127.0.0.1:1' }] }]);
    stack.registry.lookup('orders', 'shop')!.cluster.setEndpoints([]); // the registry's last endpoint went away
    expect(await stack.call('/x', { host: 'orders.shop' })).toMatchObject({ status: 503, reason: 'upstream.no_endpoint' });
  });

  it('routes, picks an endpoint, retries a 503 on the other one and relays its answer; the retry budget is given back', async () => {
    const busy = await upstream(answer(503, 'busy'));
    const ok = await upstream(answer(200, 'ok'));
    const stack = await outboundStack([roundRobinOrders([busy, ok], [{ name: 'all', retries: { attempts: 2, retryOn: ['5xx'], backoff: { base: '1ms', max: '1ms' } } }])]);
    const got = await stack.call('/orders/1', { host: 'orders' });
    expect(got).toMatchObject({ status: 200, body: 'ok' });
    expect([busy.hits(), ok.hits()]).toEqual([1, 1]);
    expect(await lastCall(stack)).toMatchObject({ status: 200, route: 'all', retries: 1, upstream: ok.address });
    expect(stack.registry.lookup('orders', 'shop')!.cluster.budget.inFlight()).toBe(0);
  });

  it('ends a call whose route timeout passes with 504 upstream.timeout, without a further attempt', async () => {
    const hang = await upstream(() => {});
    const ok = await upstream(answer(200, 'ok'));
    const stack = await outboundStack([roundRobinOrders([hang, ok], [{ name: 'all', timeout: '150ms', retries: { attempts: 2, retryOn: ['5xx', 'reset'] } }])]);
    expect(await stack.call('/orders/1', { host: 'orders' })).toMatchObject({ status: 504, reason: 'upstream.timeout' });
    expect(ok.hits()).toBe(0);
    expect(await lastCall(stack)).toMatchObject({ status: 504, reason: 'upstream.timeout', retries: 0 });
    expect(stack.registry.lookup('orders', 'shop')!.cluster.budget.inFlight()).toBe(0);
  });

  it('retries an attempt that passed its per-try timeout on the other endpoint', async () => {
    const hang = await upstream(() => {});
    const ok = await upstream(answer(200, 'ok'));
    const stack = await outboundStack([
      roundRobinOrders([hang, ok], [{ name: 'all', timeout: '5s', retries: { attempts: 1, perTryTimeout: '100ms', retryOn: ['5xx'], backoff: { base: '1ms', max: '1ms' } } }]),
    ]);
    expect(await stack.call('/orders/1', { host: 'orders' })).toMatchObject({ status: 200, body: 'ok' });
    expect(await lastCall(stack)).toMatchObject({ status: 200, retries: 1, upstream: ok.address });
  });
});
