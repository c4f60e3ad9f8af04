import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { FRONTEND, ordersUsers, startMesh } from '../helpers/mesh.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';

/*
 * End to end: frontend's app -> frontend sidecar -> mTLS -> orders (or
 * payments) sidecar (ip-access -> authn -> authz -> rate-limit) -> app, with
 * every RateLimitPolicy delivered by a real policy server. Only local rules:
 * the Redis-backed ones have their own integration test.
 *
 * Every limit is per hour, so no bucket refills while the file runs: a
 * refusal seen in one test still holds in a later one. The tests share
 * buckets on purpose and run in order; the auto-ban case has a workload of
 * its own (payments), since it bans 127.0.0.1, the address every call
 * through the frontend sidecar comes from.
 */

const ISSUER = 'https://idp.test';

const ordersLimits = (tenantRequests: number): string =>
  policyYaml('RateLimitPolicy', 'orders-limits', {
    selector: { services: ['orders'] },
    rules: [
      { name: 'per-tenant', match: { paths: ['/tenant/*'] }, key: ['claim:tenant'], limit: { requests: tenantRequests, per: '1h' } },
      { name: 'writes', match: { methods: ['POST'], paths: ['/orders/*'] }, key: ['source.principal'], limit: { requests: 2, per: '1h' } },
    ],
  });

describe('rate limiting through two sidecars', () => {
  let mesh: Mesh;
  let h: PolicyHarness;
  let ordersApp: TestServer;
  let paymentsApp: TestServer;
  let jwks: TestIdp;
  let orders: TestSidecar;
  let payments: TestSidecar;
  let frontend: TestSidecar;

  const token = (tenant: string): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    return jwks.sign({ iss: ISSUER, aud: 'orders', sub: `user-of-${tenant}`, tenant, iat: now, exp: now + 300 });
  };
  const call = async (p: string, opts: { host?: string; method?: 'GET' | 'POST'; headers?: Record<string, string> } = {}) => {
    const res = await request(`${frontend.outboundUrl}${p}`, {
      method: opts.method ?? 'GET',
      headers: { host: opts.host ?? 'orders.shop', ...(opts.method === 'POST' ? { 'content-type': 'application/json' } : {}), ...opts.headers },
      ...(opts.method === 'POST' ? { body: '{"item":1}' } : {}),
    });
    const body = (await res.body.json()) as Record<string, unknown>;
    return { status: res.statusCode, headers: res.headers, body };
  };
  const bearer = async (tenant: string) => ({ authorization: `Bearer ${await token(tenant)}` });
  const metrics = async (sidecar: TestSidecar) => parsePrometheusText(await (await request(`${sidecar.adminUrl}/metrics`)).body.text());

  beforeAll(async () => {
    jwks = await startTestIdp();
    mesh = await startMesh({
      policies: {
        'shop/authn.yaml': ordersUsers(ISSUER, `${jwks.url}/jwks`, { spec: { onMissingToken: 'allow-anonymous' } }),
        'shop/orders-limits.yaml': ordersLimits(3),
        'shop/trial.yaml': policyYaml('RateLimitPolicy', 'trial', {
          selector: { services: ['orders'] },
          mode: 'shadow',
          rules: [{ name: 'tiny', match: { paths: ['/catalog/*'] }, key: ['source.principal'], limit: { requests: 1, per: '1h' } }],
        }),
        'shop/payments.yaml': [
          policyYaml('IPAccessPolicy', 'payments-edge', { selector: { services: ['payments'] }, autoBan: { threshold: 3, window: '1m', duration: '10m' } }),
          policyYaml('RateLimitPolicy', 'payments-limits', {
            selector: { services: ['payments'] },
            rules: [{ name: 'per-ip', match: { paths: ['/pay'] }, key: ['source.ip'], limit: { requests: 1, per: '1h' } }],
          }),
        ].join('---\n'),
      },
      sidecars: { authorization: { allowWhenNoPolicy: true } },
      orders: { log: { level: 'info', accessLog: true } },
      // /health matches no rule: it spends no budget while the snapshots and the registry arrive.
      ready: { path: '/health' },
    });
    ({ h, app: ordersApp, orders, frontend } = mesh);
    paymentsApp = await startHttpServer(echoHandler('payments'));
    payments = await mesh.sidecar('payments', { inbound: { app: paymentsApp.url } });
    await eventually(() => call('/health', { host: 'payments.shop' }), { until: (res) => res.status === 200, timeoutMs: 10_000, what: "call('/health') to payments to answer 200" });
  }, 30_000);

  afterAll(async () => {
    await mesh?.close();
    await paymentsApp?.close();
    await jwks?.close();
  });

  it('a tenant keyed by a verified claim gets its limit, then 429 ratelimit.exceeded with retry-after and RateLimit headers; other tenants are admitted', async () => {
    const acme = await bearer('acme');
    const hitsBefore = ordersApp.hits();
    // Admitted calls tell the client what is left (r) and for how long no more comes back (t: one token per 20 minutes).
    const admitted = [];
    for (let i = 0; i < 3; i++) admitted.push(await call('/tenant/items', { headers: acme }));
    expect(admitted.map((r) => [r.status, r.headers['ratelimit-policy']])).toEqual(Array(3).fill([200, '"per-tenant";q=3;w=3600']));
    // t is whole seconds, rounded down: 1200 when the call takes no measurable time.
    expect(admitted.map((r) => r.headers.ratelimit)).toEqual([2, 1, 0].map((r) => expect.stringMatching(new RegExp(`^"per-tenant";r=${r};t=(1199|1200)$`))));
    expect(ordersApp.hits()).toBe(hitsBefore + 3);

    const refused = await call('/tenant/items', { headers: acme });
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ code: 'ratelimit.exceeded', rule: 'shop/orders-limits#per-tenant', decision_id: expect.stringMatching(/^[0-9a-z]{12}$/) });
    const retryAfter = refused.headers['retry-after'] as string;
    expect(retryAfter).toMatch(/^\d+$/);
    // 3 per hour: one token every 20 minutes.
    expect(Number(retryAfter)).toBeGreaterThan(1190);
    expect(Number(retryAfter)).toBeLessThanOrEqual(1200);
    expect(refused.headers['ratelimit-policy']).toBe('"per-tenant";q=3;w=3600');
    expect(refused.headers.ratelimit).toBe(`"per-tenant";r=0;t=${retryAfter}`);
    expect(ordersApp.hits()).toBe(hitsBefore + 3);

    // The operator finds the refusal by its decision id, in the decision log and the access log.
    const id = refused.body.decision_id;
    await expect
      .poll(() => orders.logs.find((l) => l.msg === 'rate limited' && l.decision_id === id), { timeout: 2_000, interval: 20 })
      .toMatchObject({ rule: 'shop/orders-limits#per-tenant', source_principal: FRONTEND, request_principal: `${ISSUER}/user-of-acme` });
    await expect
      .poll(() => orders.logs.find((l) => l.log === 'access' && l.decision_id === id), { timeout: 2_000, interval: 20 })
      .toMatchObject({ status: 429, reason: 'ratelimit.exceeded', ratelimit: 'limited', rule: 'shop/orders-limits#per-tenant' });

    // Same caller workload, another tenant: its own bucket.
    expect((await call('/tenant/items', { headers: await bearer('globex') })).status).toBe(200);
    // A fresh token of the same tenant does not reset anything.
    expect((await call('/tenant/items', { headers: await bearer('acme') })).status).toBe(429);
    expect(ordersApp.hits()).toBe(hitsBefore + 4);
  });

  it('a claims header without a verified token is not a claim: it cannot buy a fresh bucket', async () => {
    // Anonymous callers (no token) share one bucket.
    for (let i = 0; i < 3; i++) expect((await call('/tenant/items')).status).toBe(200);
    expect((await call('/tenant/items')).body.code).toBe('ratelimit.exceeded');
    const forged = { 'x-jwt-claims': Buffer.from(JSON.stringify({ iss: ISSUER, sub: 'mallory', tenant: 'fresh' })).toString('base64url') };
    expect(await call('/tenant/items', { headers: forged })).toMatchObject({ status: 429, body: { code: 'ratelimit.exceeded' } });
    // With a real token, the forged header changes nothing either: the verified tenant decides.
    expect((await call('/tenant/items', { headers: { ...(await bearer('acme')), ...forged } })).status).toBe(429);
    // A verified token of that tenant is admitted, and the app sees the verified claims, not the forged ones.
    const fresh = await call('/tenant/items', { headers: await bearer('fresh') });
    expect(fresh.status).toBe(200);
    const seen = (fresh.body.headers as Record<string, string>)['x-jwt-claims']!;
    expect(JSON.parse(Buffer.from(seen, 'base64url').toString())).toMatchObject({ sub: 'user-of-fresh' });
  });

  it('a rule matching POST /orders/* limits the frontend principal writes and leaves its reads alone', async () => {
    expect((await call('/orders/1', { method: 'POST' })).status).toBe(200);
    expect((await call('/orders/2', { method: 'POST' })).status).toBe(200);
    const refused = await call('/orders/3', { method: 'POST' });
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ code: 'ratelimit.exceeded', rule: 'shop/orders-limits#writes' });
    expect(refused.headers['ratelimit-policy']).toBe('"writes";q=2;w=3600');
    for (let i = 0; i < 5; i++) expect((await call('/orders/1')).status).toBe(200);
    // Outside the rule's paths, a POST is not counted.
    expect((await call('/carts/1', { method: 'POST' })).status).toBe(200);
    const m = await metrics(orders);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { policy: 'shop/orders-limits', rule: 'writes', decision: 'allowed' })).toBe(2);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { policy: 'shop/orders-limits', rule: 'writes', decision: 'limited' })).toBe(1);
  });

  it('a shadow policy never refuses, and counts what it would have refused in metrics and logs', async () => {
    const hitsBefore = ordersApp.hits();
    for (let i = 0; i < 4; i++) expect((await call('/catalog/1')).status).toBe(200);
    expect(ordersApp.hits()).toBe(hitsBefore + 4);

    const m = await metrics(orders);
    expect(sumOf(m, 'meshgate_shadow_denials_total', { policy: 'shop/trial', rule: 'tiny' })).toBe(3);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { policy: 'shop/trial', rule: 'tiny', decision: 'shadow_limited' })).toBe(3);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { policy: 'shop/trial', rule: 'tiny', decision: 'allowed' })).toBe(1);

    const catalog = () => orders.logs.filter((l) => l.log === 'access' && l.path === '/catalog/1');
    await expect.poll(() => catalog().length, { timeout: 2_000, interval: 20 }).toBe(4);
    expect(catalog().map((l) => [l.status, l.ratelimit])).toEqual([
      [200, 'allowed'],
      [200, 'shadow_limited'],
      [200, 'shadow_limited'],
      [200, 'shadow_limited'],
    ]);
    expect(catalog()[1]).toMatchObject({ shadow_denials: ['shop/trial#tiny'] });
    // Logged once per rule per second, not once per call.
    const lines = orders.logs.filter((l) => l.msg === 'rate limit: shadow rule would refuse' && l.rule === 'shop/trial#tiny');
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThan(3);
  });

  it('an address that keeps hitting its limit is banned by IPAccessPolicy autoBan (429 ip.banned)', async () => {
    const p = { host: 'payments.shop' };
    const hitsBefore = paymentsApp.hits();
    expect((await call('/pay', p)).status).toBe(200);
    for (let i = 0; i < 3; i++) expect(await call('/pay', p)).toMatchObject({ status: 429, body: { code: 'ratelimit.exceeded', rule: 'shop/payments-limits#per-ip' } });

    const banned = await call('/pay', p);
    expect(banned).toMatchObject({ status: 429, body: { code: 'ip.banned', rule: 'shop/payments-edge#autoBan' } });
    expect(Number(banned.headers['retry-after'])).toBeGreaterThan(590);
    expect(banned.headers['ratelimit-policy']).toBeUndefined();
    expect(paymentsApp.hits()).toBe(hitsBefore + 1);

    const bans = (await (await request(`${payments.adminUrl}/bans`)).body.json()) as unknown;
    expect(bans).toEqual([{ address: '127.0.0.1', until: expect.any(String), reason: 'ratelimit.exceeded', count: 3 }]);
    // A banned call costs no bucket lookup.
    const m = await metrics(payments);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { policy: 'shop/payments-limits', rule: 'per-ip' })).toBe(4);
    // The ban is the payments sidecar's: orders still answers the same address.
    expect((await call('/health')).status).toBe(200);
  });

  it('a raised limit is enforced once the server pushes it; the buckets of unchanged rules keep their counts', async () => {
    const acme = await bearer('acme');
    expect((await call('/tenant/items', { headers: acme })).status).toBe(429);
    await h.write('shop/orders-limits.yaml', ordersLimits(10));

    // A refused call spends nothing, so polling does not change what it measures.
    await expect.poll(async () => (await call('/tenant/items', { headers: acme })).status, { timeout: 5_000, interval: 50 }).toBe(200);
    // The new limit starts a new bucket of 10, of which the poll spent one.
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await call('/tenant/items', { headers: acme })).status);
    expect(statuses).toEqual([...Array<number>(9).fill(200), 429]);
    const refused = await call('/tenant/items', { headers: acme });
    expect(refused.headers['ratelimit-policy']).toBe('"per-tenant";q=10;w=3600');

    // `writes` did not change: the frontend's POSTs are still refused.
    expect(await call('/orders/4', { method: 'POST' })).toMatchObject({ status: 429, body: { code: 'ratelimit.exceeded', rule: 'shop/orders-limits#writes' } });
  });
});
