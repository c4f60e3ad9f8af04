import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendCalls, startMesh } from '../helpers/mesh.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';

/*
 * #11: 404 route.not_found means "no such service". A service the sidecar
 * knows (registry, Route, policy.destinations, or listed earlier) that has no
 * endpoint right now is a 503 upstream.no_endpoint, so alerts on 5xx fire.
 */

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
  let mesh: Mesh;
  let orders: TestSidecar | undefined;
  let frontend: TestSidecar;

  const call = async (host: string): Promise<{ status: number; code: string | undefined }> => {
    const { status, text } = await mesh.call('/x', { host });
    return { status, code: status === 200 ? undefined : (JSON.parse(text) as { code: string }).code };
  };

  beforeAll(async () => {
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allowFrontendCalls, 'shop/payments-route.yaml': paymentsRoute },
      // No warm-up: this file is about what a complete registry says.
      server: { registry: { warmup: '0s', static: [{ name: 'legacy', namespace: 'shop', endpoints: [] }] } },
      frontend: (base) => ({
        // No hold: orders' endpoint goes the moment the registry drops it.
        policy: { ...base.policy, holdEndpoints: '0s', destinations: ['orders.shop', 'payments.shop', 'legacy.shop', 'billing.shop'] },
      }),
      ready: { path: '/x' },
    });
    ({ orders, frontend } = mesh);
  });
  afterAll(async () => {
    await mesh?.close();
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
