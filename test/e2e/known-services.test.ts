import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig, TRUST_DOMAIN } from '../integration/policy-server-harness.ts';

/*
 * #11: 404 route.not_found means "no such service". A service the sidecar
 * knows (registry, Route, policy.destinations, or listed earlier) that has no
 * endpoint right now is a 503 upstream.no_endpoint, so alerts on 5xx fire.
 */

const allowFrontend = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: frontend-calls-orders, namespace: shop }
spec:
  selector: { services: [orders] }
  action: ALLOW
  rules: [{ from: [{ principals: ["spiffe://${TRUST_DOMAIN}/ns/shop/sa/frontend"] }] }]
`;
// frontend's route to payments, whose sidecars never registered.
const paymentsRoute = `apiVersion: meshgate.dev/v1
kind: Route
metadata: { name: payments, namespace: shop }
spec:
  selector: { services: [frontend] }
  service: payments
  routes: [{ name: all }]
`;

describe('a known service with no endpoint answers 503, an unknown one 404', () => {
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let stateDir: string;
  let orders: TestSidecar | undefined;
  let frontend: TestSidecar;

  const call = async (host: string): Promise<{ status: number; code: string | undefined }> => {
    const res = await request(`${frontend.outboundUrl}/x`, { headers: { host } });
    const text = await res.body.text();
    return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string }).code };
  };

  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/allow.yaml', allowFrontend);
    await h.write('shop/payments-route.yaml', paymentsRoute);
    // No warm-up: this file is about what a complete registry says.
    ps = await h.start({ registry: { warmup: '0s', static: [{ name: 'legacy', namespace: 'shop', endpoints: [] }] } });
    app = await startHttpServer(echoHandler('orders'));
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-known-'));
    const sidecar = async (name: string, extra: Record<string, unknown>): Promise<TestSidecar> => {
      const base = await meshSidecarConfig(h, name, { servers: [ps.address], stateDir });
      return startTestSidecar({ ...base, log: { level: 'warn', accessLog: false }, ...extra } as Parameters<typeof startTestSidecar>[0]);
    };
    orders = await sidecar('orders', { inbound: { app: app.url } });
    const base = await meshSidecarConfig(h, 'frontend', { servers: [ps.address], stateDir });
    frontend = await startTestSidecar({
      ...base,
      // No hold: orders' endpoint goes the moment the registry drops it.
      policy: { ...base.policy, holdEndpoints: '0s', destinations: ['orders.shop', 'payments.shop', 'legacy.shop', 'billing.shop'] },
      inbound: { app: 'http://127.0.0.1:1' },
      log: { level: 'warn', accessLog: false },
    } as Parameters<typeof startTestSidecar>[0]);
    // The registry push (orders' endpoint) reaches frontend asynchronously.
    await eventually(() => call('orders.shop'), { until: (res) => res.status === 200, timeoutMs: 10_000, what: "call('orders.shop') to answer 200" });
  });
  afterAll(async () => {
    await frontend?.drain(200);
    await orders?.drain(200);
    await ps?.close();
    await app?.close();
    await h?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a name nothing lists is 404 route.not_found', async () => {
    expect(await call('nosuch.shop')).toEqual({ status: 404, code: 'route.not_found' });
  });

  it('a registry.static entry with no endpoint is 503 upstream.no_endpoint', async () => {
    expect(await call('legacy.shop')).toEqual({ status: 503, code: 'upstream.no_endpoint' });
  });

  it('the destination of a Route in force, never registered, is 503 upstream.no_endpoint', async () => {
    expect(await call('payments.shop')).toEqual({ status: 503, code: 'upstream.no_endpoint' });
  });

  it('a service the config says the workload calls (policy.destinations), never registered, is 503 upstream.no_endpoint', async () => {
    expect(await call('billing.shop')).toEqual({ status: 503, code: 'upstream.no_endpoint' });
  });

  it('a service whose last sidecar left the registry is 503 upstream.no_endpoint, not 404', async () => {
    await orders!.drain(200);
    orders = undefined;
    await expect.poll(async () => (await call('orders.shop')).code, { timeout: 5_000, interval: 20 }).toBe('upstream.no_endpoint');
    expect((await call('orders.shop')).status).toBe(503);
    const metrics = await (await request(`${frontend.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/meshgate_requests_total\{[^}]*destination_service="orders\.shop"[^}]*response_code="503"[^}]*reason="upstream\.no_endpoint"/);
  });
});
