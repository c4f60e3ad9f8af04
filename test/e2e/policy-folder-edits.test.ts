import { open } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendReads, denyPaths, segmentCountingApp, startMesh } from '../helpers/mesh.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';

/*
 * Edits an operator makes to the policy folder of a live mesh (CA, policy
 * server, two sidecars over mTLS) while calls to a path a DENY rule covers
 * keep coming. What counts is what reaches orders' app: not one denied call.
 */

const deny = denyPaths;

describe('policy folder edits on a live mesh never let a denied call through', () => {
  let mesh: Mesh;
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  /** Calls that reached orders' app, by first path segment. */
  const { reached, app } = segmentCountingApp();

  const call = (p: string): Promise<number> => mesh.status(p);
  /** Calls /secret/x and /orders/x (one in ten to the denied path, as the operator's load) until stopped. */
  const load = () => {
    let stop = false;
    const made = { secret: 0, orders: 0, ordersFailed: 0 };
    const done = (async () => {
      for (let i = 0; !stop; i++) {
        if (i % 10 === 0) {
          await call('/secret/x');
          made.secret++;
        } else if ((await call('/orders/x')) === 200) made.orders++;
        else made.ordersFailed++;
      }
    })();
    return {
      made,
      async stop() {
        stop = true;
        await done;
        return made;
      },
    };
  };

  beforeAll(async () => {
    mesh = await startMesh({ policies: { 'shop/allow.yaml': allowFrontendReads(['/orders/*', '/secret/*', '/admin/*', '/marker/*']), 'shop/deny.yaml': deny(['/secret/*']) }, app });
    ({ h, ps } = mesh);
    if ((await call('/secret/1')) !== 403) throw new Error('the mesh did not come up with the DENY policy in force');
    reached.clear();
  });
  afterAll(async () => {
    await mesh?.close();
  });

  it('a DENY file truncated and written again in place over 300 ms: 0 denied calls reach the app', async () => {
    const traffic = load();
    await expect.poll(() => traffic.made.secret, { timeout: 5_000 }).toBeGreaterThan(3);
    // What editors and config management do: truncate, then write, here in 12 pieces over ~300 ms.
    const next = deny(['/secret/*', '/admin/*']);
    const handle = await open(path.join(h.folder, 'shop', 'deny.yaml'), 'r+');
    await handle.truncate(0);
    const piece = Math.ceil(next.length / 12);
    for (let at = 0; at < next.length; at += piece) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      await handle.write(next.slice(at, at + piece), at);
    }
    await handle.close();
    // The whole new version reaches the sidecar: /admin is denied too.
    await expect.poll(() => call('/admin/x'), { timeout: 5_000, interval: 20 }).toBe(403);
    await expect.poll(() => traffic.made.secret, { timeout: 10_000 }).toBeGreaterThanOrEqual(30);
    const made = await traffic.stop();
    expect(made.ordersFailed).toBe(0);
    expect(reached.get('secret') ?? 0).toBe(0);
    expect(ps.server.store.errors()).toEqual([]);
  });

  it('a copy of the DENY document in a file that sorts earlier is refused, named by its file: 0 denied calls reach the app', async () => {
    const traffic = load();
    await expect.poll(() => traffic.made.secret, { timeout: 5_000 }).toBeGreaterThan(3);
    // Same kind, namespace and name as shop/deny.yaml's document, another spec.
    await h.write('shop/07b-x.yaml', deny(['/nothing/*']));
    await expect.poll(() => ps.server.store.errors().length, { timeout: 5_000 }).toBe(1);
    // A later change, once enforced, proves every snapshot before it reached the sidecar.
    await h.write('shop/zz-marker.yaml', deny(['/marker/*']).replace('no-secrets', 'no-marker'));
    await expect.poll(() => call('/marker/x'), { timeout: 5_000, interval: 20 }).toBe(403);
    await expect.poll(() => traffic.made.secret, { timeout: 10_000 }).toBeGreaterThanOrEqual(30);
    await traffic.stop();
    expect(reached.get('secret') ?? 0).toBe(0);
    expect(ps.server.store.errors().map((e) => `${e.source.file}: ${e.reason}`)).toEqual([
      'shop/07b-x.yaml: duplicate: AuthorizationPolicy/shop/no-secrets is already served from shop/deny.yaml (document 0); this copy is ignored',
    ]);
    expect(ps.server.store.documents().find((d) => d.key === 'AuthorizationPolicy/shop/no-secrets')?.file).toBe('shop/deny.yaml');
  });
});
