import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendReads, denyPaths, FRONTEND, startMesh } from '../helpers/mesh.ts';
import type { TestServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';

const denySecret = denyPaths(['/secret/*']);

describe('policies from the policy server, enforced by sidecars', () => {
  let mesh: Mesh;
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let orders: TestSidecar | undefined;
  let frontend: TestSidecar;

  const sidecar = (name: string, extra: Record<string, unknown> = {}, servers?: string[], stateDir?: string): Promise<TestSidecar> => mesh.sidecar(name, extra, { servers, stateDir });
  const call = (p: string): Promise<number> => mesh.status(p);
  const directCaller = (port: number, service?: string) => mesh.directCaller(port, service);

  beforeAll(async () => {
    mesh = await startMesh({ policies: { 'shop/allow.yaml': allowFrontendReads(['/orders/*', '/secret/*']) }, ready: { timeoutMs: 5_000 } });
    ({ h, ps, app, orders, frontend } = mesh);
  });
  afterAll(async () => {
    await mesh?.close();
  });

  it('enforces an ALLOW policy: the allowed call passes, anything else is denied with its reason code', async () => {
    expect(await call('/orders/1')).toBe(200);
    const res = await request(`${frontend.outboundUrl}/orders/1`, { method: 'DELETE', headers: { host: 'orders.shop' } });
    expect(res.statusCode).toBe(403);
    expect(await res.body.json()).toMatchObject({ code: 'authz.denied' });
  });

  it('a policy change reaches and is enforced by a subscribed sidecar in under a second', async () => {
    expect(await call('/secret/1')).toBe(200);
    const started = performance.now();
    await h.write('shop/deny.yaml', denySecret);
    await expect.poll(() => call('/secret/1'), { timeout: 5_000, interval: 10 }).toBe(403);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeLessThan(1_000);
    console.log(`policy change enforced after ${elapsed.toFixed(0)} ms`);
  });

  it('an invalid document is rejected alone with its exact message; the others keep applying', async () => {
    await h.write('shop/bad.yaml', denySecret.replace('no-secrets', 'broken').replace('action: DENY', 'action: MAYBE'));
    await expect
      .poll(() => ps.server.store.errors().map((e) => `${e.source.file}: ${e.field}: ${e.reason}`), { timeout: 3_000 })
      .toEqual([expect.stringMatching(/^shop\/bad\.yaml: spec\.action: .*ALLOW.*DENY.*AUDIT/)]);
    expect(await call('/orders/1')).toBe(200);
    expect(await call('/secret/1')).toBe(403);
    const sidecars = ps.server.directory.subscribers();
    expect(sidecars.map((s) => s.spiffeId).sort()).toEqual([FRONTEND, 'spiffe://cluster.local/ns/shop/sa/orders']);
    expect(new Set(sidecars.map((s) => s.ackedVersion))).toEqual(new Set(sidecars.map((s) => s.sentVersion)));
  });

  it('server killed mid-load: sidecars keep enforcing the last version (zero fail-open decisions)', async () => {
    let stop = false;
    let secretAllowed = 0;
    let ordersAllowed = 0;
    let ordersFailed = 0;
    const load = (async () => {
      const deadline = Date.now() + 20_000;
      while (!stop && Date.now() < deadline) {
        if ((await call('/secret/x')) === 200) secretAllowed++;
        if ((await call('/orders/x')) === 200) ordersAllowed++;
        else ordersFailed++;
      }
    })();
    await expect.poll(() => ordersAllowed, { timeout: 5_000 }).toBeGreaterThan(20);
    await ps.close();
    const afterKill = ordersAllowed;
    await expect.poll(() => ordersAllowed - afterKill, { timeout: 5_000 }).toBeGreaterThan(50);
    stop = true;
    await load;
    expect(secretAllowed).toBe(0);
    expect(ordersFailed).toBe(0);
  });

  it('a sidecar restarted while the server is down enforces its persisted copy', async () => {
    await orders!.drain(200);
    orders = await sidecar('orders', { inbound: { app: app.url } });
    const dump = (await (await request(`${orders.adminUrl}/config_dump`)).body.json()) as { policy: { source: string } };
    expect(dump.policy.source).toBe('disk');
    // The registry in frontend still holds the old orders endpoint; call the new inbound directly over mTLS instead.
    const direct = await directCaller(orders.inbound.port);
    try {
      expect(await direct.call('/orders/1')).toEqual({ status: 200, code: undefined });
      expect(await direct.call('/secret/1')).toEqual({ status: 403, code: 'authz.denied' });
    } finally {
      await direct.close();
    }
  });

  it('with no persisted copy and no server, a sidecar admits nothing and is not ready', async () => {
    const emptyState = await mkdtemp(path.join(tmpdir(), 'meshgate-empty-'));
    const lonely = await sidecar('lonely', { inbound: { app: app.url } }, ['127.0.0.1:1'], emptyState);
    const direct = await directCaller(lonely.inbound.port, 'lonely');
    try {
      expect(await direct.call('/orders/1')).toEqual({ status: 503, code: 'policy.unavailable' });
      const ready = await request(`${lonely.adminUrl}/ready`);
      expect(ready.statusCode).toBe(503);
      expect(((await ready.body.json()) as { checks: { policy: string } }).checks.policy).toMatch(/^no-policy/);
    } finally {
      await direct.close();
      await lonely.drain(200);
      await rm(emptyState, { recursive: true, force: true });
    }
  });
});
