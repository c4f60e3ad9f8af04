import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig } from '../integration/policy-server-harness.ts';

/*
 * A caller's outlier detection and retries through a real mesh (mTLS STRICT,
 * certificates from a CA): frontend -> orders sidecars -> apps. A peer
 * sidecar's refusal that every endpoint would give (503 ratelimit.unavailable:
 * a global rule, failureMode deny, its Redis unreachable) ejects nobody and is
 * not retried; a refusal about one endpoint (503 policy.unavailable: a peer
 * with no policy) ejects it and its calls move to the healthy peer; an app
 * cannot pass its own 503 off as a policy refusal.
 *
 * Policy comes from static snapshots (no policy server); every orders sidecar
 * is the workload orders (same SPIFFE ID), listed under three service names
 * of the frontend so each case has its own cluster.
 */

const ORDERS = 'spiffe://cluster.local/ns/shop/sa/orders';

const limits = policyDoc('RateLimitPolicy', 'orders-limits', {
  selector: { services: ['orders'] },
  rules: [{ name: 'shared', match: { paths: ['/limited/*'] }, key: ['source.principal'], limit: { requests: 100, per: '1s' }, burst: 10, scope: 'global' }],
});

describe('peer refusals through the mesh', () => {
  let h: PolicyHarness;
  const dirs: string[] = [];
  const apps: TestServer[] = [];
  const sidecars: TestSidecar[] = [];
  let a: TestSidecar;
  let b: TestSidecar;
  let noPolicy: TestSidecar;
  let forging: TestSidecar;
  let frontend: TestSidecar;
  let appA: TestServer;
  let appB: TestServer;

  const orders = async (app: TestServer, withPolicy: boolean): Promise<TestSidecar> => {
    const stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-peer-'));
    dirs.push(stateDir);
    if (withPolicy) await writeSnapshot(stateDir, { service: 'orders' }, [limits]);
    const sidecar = await startTestSidecar({
      ...(await meshSidecarConfig(h, 'orders', { servers: ['127.0.0.1:1'], stateDir })),
      inbound: { app: app.url },
      authorization: { allowWhenNoPolicy: true },
      // No rateLimit.redis: the global rule cannot be counted and fails closed, as with Redis down.
      log: { level: 'warn', accessLog: false },
    } as Parameters<typeof startTestSidecar>[0]);
    sidecars.push(sidecar);
    return sidecar;
  };
  const service = (name: string, endpoints: TestSidecar[], retries?: Record<string, unknown>) => ({
    name,
    namespace: 'shop',
    identities: [ORDERS],
    loadBalancer: 'round_robin',
    endpoints: endpoints.map((s) => ({ address: `127.0.0.1:${s.inbound.port}` })),
    outlierDetection: { consecutive5xx: 5, baseEjection: '30s', maxEjectionPercent: 50 },
    routes: retries ? [{ retries }] : [],
  });
  const call = async (host: string, p: string) => {
    const res = await request(`${frontend.outboundUrl}${p}`, { headers: { host } });
    const text = await res.body.text();
    return { status: res.statusCode, reason: res.headers['x-meshgate-reason'], headers: res.headers, text };
  };
  const metrics = async (sidecar: TestSidecar) => parsePrometheusText(await (await request(`${sidecar.adminUrl}/metrics`)).body.text());
  const served = async (sidecar: TestSidecar, reason?: string) => sumOf(await metrics(sidecar), 'meshgate_requests_total', { direction: 'inbound', ...(reason ? { reason } : {}) });

  beforeAll(async () => {
    h = await createPolicyHarness();
    appA = await startHttpServer(echoHandler('orders-a'));
    appB = await startHttpServer(echoHandler('orders-b'));
    // An app answering 503 and claiming the sidecar's reason code for it.
    const forger = await startHttpServer((_req, res) => {
      res.writeHead(503, { 'x-meshgate-reason': 'ratelimit.unavailable', 'content-type': 'text/plain' });
      res.end('busy');
    });
    apps.push(appA, appB, forger);
    a = await orders(appA, true);
    b = await orders(appB, true);
    noPolicy = await orders(appB, false);
    forging = await orders(forger, true);
    const { policy: _none, ...mesh } = await meshSidecarConfig(h, 'frontend', { servers: ['127.0.0.1:1'], stateDir: tmpdir() });
    frontend = await startTestSidecar({
      ...mesh,
      inbound: { app: 'http://127.0.0.1:1' },
      services: [service('orders', [a, b], { attempts: 2, retryOn: ['5xx'] }), service('orders-degraded', [a, noPolicy], { attempts: 2, retryOn: ['5xx'] }), service('orders-forged', [a, forging])],
      log: { level: 'warn', accessLog: false },
    } as Parameters<typeof startTestSidecar>[0]);
    sidecars.push(frontend);
  }, 30_000);

  afterAll(async () => {
    for (const s of sidecars) await s.drain(200);
    for (const app of apps) await app.close();
    await h?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('503 ratelimit.unavailable from every peer ejects nobody, is not retried and spends no budget; both endpoints keep their calls', async () => {
    const before = { a: await served(a), b: await served(b) };
    for (let i = 0; i < 20; i++) {
      expect(await call('orders.shop', `/limited/${i}`)).toMatchObject({
        status: 503,
        reason: 'ratelimit.unavailable',
        // The peer's RateLimit fields reach the caller: nothing admitted for now, under a 100/s policy 10 deep.
        headers: { 'retry-after': '1', 'ratelimit-policy': '"shared";q=100;w=1;meshgate-burst=10', ratelimit: '"shared";r=0;t=1' },
      });
    }
    // Exactly one attempt per call, spread over both peers: no retry, no endpoint taken out.
    expect((await served(a)) - before.a + (await served(b)) - before.b).toBe(20);
    expect(await served(a, 'ratelimit.unavailable')).toBe(10);
    expect(await served(b, 'ratelimit.unavailable')).toBe(10);
    const m = await metrics(frontend);
    expect(sumOf(m, 'meshgate_outlier_ejections_total', { destination_service: 'orders.shop' })).toBe(0);
    expect(sumOf(m, 'meshgate_upstream_retries_total')).toBe(0);

    const hits = { a: appA.hits(), b: appB.hits() };
    for (let i = 0; i < 10; i++) expect((await call('orders.shop', `/items/${i}`)).status).toBe(200);
    expect(appA.hits() - hits.a).toBe(5);
    expect(appB.hits() - hits.b).toBe(5);
  });

  it('503 policy.unavailable is about that peer: retried on the healthy one, and the peer is ejected after five', async () => {
    const hits = appA.hits();
    for (let i = 0; i < 20; i++) expect((await call('orders-degraded.shop', `/items/${i}`)).status).toBe(200);
    expect(appA.hits() - hits).toBe(20);
    expect(await served(noPolicy, 'policy.unavailable')).toBe(5);
    const m = await metrics(frontend);
    expect(sumOf(m, 'meshgate_outlier_ejections_total', { destination_service: 'orders-degraded.shop' })).toBe(1);
    expect(sumOf(m, 'meshgate_upstream_retries_total')).toBe(5);
  });

  it("an app's own x-meshgate-reason never leaves its sidecar: its 503s count as the endpoint's and eject it", async () => {
    const answers = [];
    for (let i = 0; i < 20; i++) answers.push(await call('orders-forged.shop', `/items/${i}`));
    const fromApp = answers.filter((r) => r.status === 503);
    expect(fromApp).toHaveLength(5);
    for (const r of fromApp) expect(r).toMatchObject({ reason: undefined, text: 'busy' });
    const m = await metrics(frontend);
    expect(sumOf(m, 'meshgate_outlier_ejections_total', { destination_service: 'orders-forged.shop' })).toBe(1);
  });
});
