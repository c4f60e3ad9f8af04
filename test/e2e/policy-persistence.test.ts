import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendReads, denyPaths, segmentCountingApp, startMesh } from '../helpers/mesh.ts';
import type { TestServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { makeReadOnly, unwritableSupport } from '../helpers/unwritable.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';

/*
 * The operator's sequence on a live mesh (CA, policy server, two sidecars over
 * mTLS): orders' policy.stateDir turns read-only, a DENY rule is added, the
 * policy server goes away, orders restarts. Before: /ready said ok, nothing
 * showed it, and after the restart orders enforced its old copy (the DENY's
 * calls got 200). Now the failure shows everywhere an operator looks, and the
 * restarted sidecar refuses the copy it cannot vouch for: not one call to the
 * denied path reaches the app.
 */

const support = await unwritableSupport();

const denySecret = denyPaths(['/secret/*']);

interface Dump {
  policy: {
    version: string | null;
    source: string | null;
    persistence: { state: string; persistedVersion?: string; diskCopy: string; lastError?: string; failingSince: string | null; failures: number };
  };
}

describe.skipIf(support.readOnly)('a last-known-good copy that cannot be written', () => {
  let mesh: Mesh;
  let h: PolicyHarness;
  let ps: TestPolicyServer | undefined;
  let app: TestServer;
  let stateDir: string;
  let orders: TestSidecar | undefined;
  let undoReadOnly: (() => Promise<void>) | undefined;
  /** Calls that reached orders' app, by first path segment. */
  const { reached, app: countingApp } = segmentCountingApp();

  const sidecar = (name: string, appUrl: string) => mesh.sidecar(name, { inbound: { app: appUrl } });
  const call = (p: string): Promise<number> => mesh.status(p);
  const admin = async (sc: TestSidecar, p: string): Promise<{ status: number; text: string }> => {
    const res = await request(`${sc.adminUrl}${p}`);
    return { status: res.statusCode, text: await res.body.text() };
  };
  const metric = async (sc: TestSidecar, name: string): Promise<number | undefined> => {
    const line = (await admin(sc, '/metrics')).text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  /** frontend's identity calling one inbound port straight (frontend's registry still names the old orders). */
  const directCaller = (port: number) => mesh.directCaller(port);

  beforeAll(async () => {
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allowFrontendReads(['/orders/*', '/secret/*']) },
      app: countingApp,
    });
    ({ h, ps, app, stateDir, orders } = mesh);
  });
  afterAll(async () => {
    await undoReadOnly?.();
    await mesh?.close();
  });

  it('shows in /ready, /metrics and /config_dump; after a server outage and a restart, 0 calls to the newly denied path reach the app', async () => {
    expect(await call('/secret/1')).toBe(200);
    const dump = async (): Promise<Dump> => JSON.parse((await admin(orders!, '/config_dump')).text) as Dump;
    await expect.poll(async () => (await dump()).policy.persistence.state, { timeout: 5_000 }).toBe('ok');
    const v1 = (await dump()).policy.version!;
    expect((await dump()).policy.persistence).toMatchObject({ persistedVersion: v1, diskCopy: 'current' });
    expect(await metric(orders!, 'meshgate_policy_snapshot_persisted')).toBe(1);

    // The stateDir turns read-only, then the DENY rule arrives: enforced in memory, not persisted.
    const undo = await makeReadOnly(stateDir);
    if (typeof undo === 'string') throw new Error(undo);
    undoReadOnly = undo;
    await h.write('shop/deny.yaml', denySecret);
    await expect.poll(() => call('/secret/1'), { timeout: 5_000, interval: 20 }).toBe(403);
    await expect.poll(async () => (await dump()).policy.persistence.state, { timeout: 5_000 }).toBe('failing');
    // The older copy is set aside just after the failed write is counted.
    await expect.poll(async () => (await dump()).policy.persistence.diskCopy, { timeout: 5_000 }).toBe('outdated');
    expect((await dump()).policy.persistence).toMatchObject({ persistedVersion: v1, diskCopy: 'outdated', lastError: expect.any(String), failingSince: expect.any(String) });
    const ready = await admin(orders!, '/ready');
    expect(ready.status).toBe(200);
    const policyCheck = (JSON.parse(ready.text) as { checks: { policy: string } }).checks.policy;
    expect(policyCheck).toContain('degraded: ');
    expect(policyCheck).toContain(`not persisted: cannot write ${path.join(stateDir, 'policy-snapshot.shop.orders.json')} since `);
    expect(policyCheck).toContain(`the older copy (version ${v1}) is still on disk: a restart without a policy server refuses it only while stateDir takes no write`);
    expect(await metric(orders!, 'meshgate_policy_snapshot_persisted')).toBe(0);
    expect(await metric(orders!, 'meshgate_policy_snapshot_persist_failures_total')).toBeGreaterThanOrEqual(1);

    // Server outage, then orders restarts on the same stateDir.
    const port = Number(ps!.address.split(':')[1]);
    await ps!.close();
    await orders!.drain(200);
    orders = await sidecar('orders', app.url);
    reached.clear();
    const direct = await directCaller(orders.inbound.port);
    try {
      const answers = new Map<string, number>();
      for (let i = 0; i < 219; i++) {
        const { status, code } = await direct.call(`/secret/${i}`);
        answers.set(`${status} ${String(code)}`, (answers.get(`${status} ${String(code)}`) ?? 0) + 1);
      }
      expect(reached.get('secret') ?? 0).toBe(0);
      expect([...answers]).toEqual([['503 policy.unavailable', 219]]);
      expect(await direct.call('/orders/1')).toEqual({ status: 503, code: 'policy.unavailable' });
      const refused = await admin(orders, '/ready');
      expect(refused.status).toBe(503);
      expect((JSON.parse(refused.text) as { checks: { policy: string } }).checks.policy).toMatch(
        new RegExp(
          `^no-policy: persisted copy \\(version ${v1}\\) not trusted: stateDir takes no write \\(.*\\): a newer policy may have failed to persist before the restart; admitting nothing until a policy server answers$`,
        ),
      );
      expect(await metric(orders, 'meshgate_policy_snapshot_persisted')).toBe(0);

      // The disk and the server come back: the current policy is enforced and persisted again.
      await undo();
      undoReadOnly = undefined;
      ps = await h.start({ listen: { address: '127.0.0.1', port } });
      await expect.poll(async () => (await direct.call('/orders/1')).status, { timeout: 10_000, interval: 50 }).toBe(200);
      expect(await direct.call('/secret/1')).toEqual({ status: 403, code: 'authz.denied' });
      await expect.poll(() => metric(orders!, 'meshgate_policy_snapshot_persisted'), { timeout: 5_000 }).toBe(1);
      // Registry changes (sidecars reconnecting) bring new versions for a while: each is persisted in turn.
      await expect
        .poll(
          async () => {
            const { version, source, persistence } = (await dump()).policy;
            return { source, state: persistence.state, diskCopy: persistence.diskCopy, sameVersion: persistence.persistedVersion === version };
          },
          { timeout: 5_000 },
        )
        .toEqual({ source: 'server', state: 'ok', diskCopy: 'current', sameVersion: true });
      expect(reached.get('secret') ?? 0).toBe(0);
    } finally {
      await direct.close();
    }
  });
});
