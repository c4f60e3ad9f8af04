import type http from 'node:http';
import { Agent, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import { TRACING_OFF_SETTINGS } from '../../../src/config/telemetry-schema.ts';
import type { Clock } from '../../../src/core/clock.ts';
import { systemClock } from '../../../src/core/clock.ts';
import { createOutboundStack } from '../../../src/outbound/outbound-stack.ts';
import type { ServiceRegistry } from '../../../src/outbound/service-registry.ts';
import { createServiceRegistry } from '../../../src/outbound/service-registry.ts';
import type { VersionConfig } from '../../../src/outbound/versions.ts';
import { createReadBuffer } from '../../../src/proxy/socket-reads.ts';
import { createAccessLog } from '../../../src/telemetry/access-log.ts';
import { createSidecarMetrics } from '../../../src/telemetry/metrics.ts';
import { tracingOff } from '../../../src/telemetry/tracing.ts';
import { deferAfterEach } from '../../helpers/cleanup.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
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
  call(path: string, headers: Record<string, string>): Promise<{ status: number; reason: string | undefined; body: string; headers: http.IncomingHttpHeaders }>;
  /** meshgate_requests_total of outbound calls refused with this reason. */
  refusals(reason: string): Promise<number>;
}

/**
 * An outbound stack for workload frontend.shop over these services (the sidecar config's `services` section),
 * with Route `versions` keyed `name.namespace` as a registry update brings them, on `clock`.
 */
async function outboundStack(services: unknown[], opts: { clock?: Clock; versions?: ReadonlyMap<string, readonly VersionConfig[]> } = {}): Promise<Stack> {
  const clock = opts.clock ?? systemClock;
  const config = sidecarConfigSchema.parse({
    workload: { service: 'frontend', namespace: 'shop' },
    inbound: { app: 'http://127.0.0.1:1' },
    mtls: { mode: 'DISABLE' },
    services,
  });
  const registry = createServiceRegistry(config.services, { clock, random: () => 0, idleTimeoutMs: 5_000, readBuffer: createReadBuffer() });
  if (opts.versions) registry.update(config.services, opts.versions);
  const metrics = createSidecarMetrics({ defaultMetrics: false });
  const { logger, lines: log } = captureLogs({ name: 'sidecar' });
  const handler = createOutboundStack({
    workload: config.workload,
    registry,
    idleTimeoutMs: 5_000,
    telemetry: {
      clock,
      metrics,
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
      return { status: res.statusCode, reason: res.headers['x-meshgate-reason'] as string | undefined, body, headers: res.headers as http.IncomingHttpHeaders };
    },
    async refusals(reason) {
      const { values } = await metrics.requestsTotal.get();
      return values.filter((v) => v.labels.direction === 'outbound' && v.labels.reason === reason).reduce((sum, v) => sum + v.value, 0);
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

describe('retiring versions (fake clock)', () => {
  const T0 = Date.UTC(2026, 4, 5, 9, 0); // 2026-05-05T09:00Z
  const HOUR = 3_600_000;
  const V2: VersionConfig = { name: 'v2', subset: { version: 'v2' } };

  /** orders.shop with one v1 and one v2 endpoint, v1 declared as given; calls pinned to v1 unless a route sends them. */
  async function ordersWithV1(v1: Omit<VersionConfig, 'name' | 'subset'>, routes: unknown[] = []) {
    const one = await upstream(answer(200, 'v1'));
    const two = await upstream(answer(200, 'v2'));
    const clock = createFakeClock(T0);
    const versions = new Map([['orders.shop', [{ name: 'v1', subset: { version: 'v1' }, ...v1 }, V2]]]);
    const stack = await outboundStack(
      [
        {
          name: 'orders',
          namespace: 'shop',
          loadBalancer: 'round_robin',
          endpoints: [
            { address: one.address, labels: { version: 'v1' } },
            { address: two.address, labels: { version: 'v2' } },
          ],
          routes,
        },
      ],
      { clock, versions },
    );
    return { stack, clock, one, two };
  }

  it('a brown-out window answers 410 with the successor only while it lasts: before, inside, at its end', async () => {
    const { stack, clock, one } = await ordersWithV1({
      deprecated: { sunset: '2026-06-30', message: 'v1 goes away' },
      brownouts: [{ start: '2026-05-05T10:00:00Z', end: '2026-05-05T11:00:00Z' }],
      successor: { version: 'v2', link: 'https://docs.example/orders/v2' },
    });
    const pinned = { host: 'orders', 'x-meshgate-version': 'v1' };
    clock.advance(HOUR - 1); // 09:59:59.999
    expect(await stack.call('/o', pinned)).toMatchObject({ status: 200, body: 'v1' });
    clock.advance(1); // 10:00: the window starts
    const inside = await stack.call('/o', pinned);
    expect(inside).toMatchObject({ status: 410, reason: 'route.version_brownout' });
    expect(inside.headers.link).toBe('<https://docs.example/orders/v2>; rel="successor-version"');
    expect(inside.headers.sunset).toBe('Tue, 30 Jun 2026 00:00:00 GMT'); // still announced on the refusal
    expect(JSON.parse(inside.body)).toMatchObject({
      code: 'route.version_brownout',
      reason: 'version v1 of orders.shop is browned out until 2026-05-05T11:00:00.000Z before it is retired: use version v2 (x-meshgate-version: v2); see https://docs.example/orders/v2',
    });
    expect(one.hits()).toBe(1); // the refused call never left
    expect(await stack.refusals('route.version_brownout')).toBe(1);
    expect(stack.log.filter((l) => l.log === 'access' && l.reason === 'route.version_brownout')).toMatchObject([{ status: 410, direction: 'outbound' }]);
    clock.advance(HOUR - 1); // 10:59:59.999: still inside
    expect(await stack.call('/o', pinned)).toMatchObject({ status: 410 });
    clock.advance(1); // 11:00: over
    expect(await stack.call('/o', pinned)).toMatchObject({ status: 200, body: 'v1' });
    // The successor itself answers all along.
    expect(await stack.call('/o', { host: 'orders', 'x-meshgate-version': 'v2' })).toMatchObject({ status: 200, body: 'v2' });
    expect(await stack.refusals('route.version_brownout')).toBe(2);
  });

  it('a retired version answers 410 route.version_retired at any time, with the successor link', async () => {
    const { stack, clock, one } = await ordersWithV1({ retired: true, successor: { link: 'https://docs.example/orders/v2' } });
    for (const step of [0, 365 * 24 * HOUR]) {
      clock.advance(step);
      const res = await stack.call('/o', { host: 'orders', 'x-meshgate-version': 'v1' });
      expect(res).toMatchObject({ status: 410, reason: 'route.version_retired' });
      expect(res.headers.link).toBe('<https://docs.example/orders/v2>; rel="successor-version"');
      expect(JSON.parse(res.body).reason).toBe('version v1 of orders.shop is retired: see https://docs.example/orders/v2');
    }
    expect(one.hits()).toBe(0);
    expect(await stack.refusals('route.version_retired')).toBe(2);
  });

  it('a retired version without a successor gets 410 without a Link', async () => {
    const { stack } = await ordersWithV1({ retired: true });
    const res = await stack.call('/o', { host: 'orders', 'x-meshgate-version': 'v1' });
    expect(res).toMatchObject({ status: 410, reason: 'route.version_retired' });
    expect(res.headers.link).toBeUndefined();
    expect(res.headers.sunset).toBeUndefined(); // not deprecated: nothing to announce
    expect(JSON.parse(res.body).reason).toBe('version v1 of orders.shop is retired: no successor is named');
  });

  it('an un-pinned call whose route backend lies within a retired version is refused; one balanced over all endpoints is not', async () => {
    const routes = [
      { name: 'old', match: { path: { prefix: '/old' } }, backends: [{ subset: { version: 'v1', zone: 'a' } }] },
      { name: 'all', match: { path: { prefix: '/' } } },
    ];
    const { stack } = await ordersWithV1({ retired: true, successor: { version: 'v2' } }, routes);
    expect(await stack.call('/old/1', { host: 'orders' })).toMatchObject({ status: 410, reason: 'route.version_retired' });
    // Round robin over both endpoints: the call is not for a version, so not refused (route it away or remove the endpoints).
    const answers = [await stack.call('/new/1', { host: 'orders' }), await stack.call('/new/2', { host: 'orders' })];
    expect(answers.map((a) => [a.status, a.body]).sort()).toEqual([
      [200, 'v1'],
      [200, 'v2'],
    ]);
  });
});
