import { mkdtemp, open, rm } from 'node:fs/promises';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig } from '../integration/policy-server-harness.ts';

/*
 * Edits an operator makes to the policy folder of a live mesh (CA, policy
 * server, two sidecars over mTLS) while calls to a path a DENY rule covers
 * keep coming. What counts is what reaches orders' app: not one denied call.
 */

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';

const allowReads = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: frontend-reads, namespace: shop }
spec:
  selector: { services: [orders] }
  action: ALLOW
  rules:
    - name: reads
      from: [{ principals: ["${FRONTEND}"] }]
      to: [{ methods: [GET], paths: ["/orders/*", "/secret/*", "/admin/*", "/marker/*"] }]
`;
/** The DENY document `no-secrets`, with the paths it denies. */
const deny = (paths: string[]): string => `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: no-secrets, namespace: shop }
spec:
  selector: { services: [orders] }
  action: DENY
  rules:
    - name: secret
      to:
        - paths: [${paths.map((p) => `"${p}"`).join(', ')}]
`;

describe('policy folder edits on a live mesh never let a denied call through', () => {
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let stateDir: string;
  let orders: TestSidecar;
  let frontend: TestSidecar;
  /** Calls that reached orders' app, by first path segment. */
  const reached = new Map<string, number>();

  const call = async (p: string): Promise<number> => {
    const res = await request(`${frontend.outboundUrl}${p}`, { headers: { host: 'orders.shop' } });
    await res.body.dump();
    return res.statusCode;
  };
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
    h = await createPolicyHarness();
    await h.write('shop/allow.yaml', allowReads);
    await h.write('shop/deny.yaml', deny(['/secret/*']));
    ps = await h.start();
    app = await startHttpServer((req: http.IncomingMessage, res: http.ServerResponse) => {
      const segment = (req.url ?? '/').split('/')[1] ?? '';
      reached.set(segment, (reached.get(segment) ?? 0) + 1);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-state-'));
    const sidecar = async (name: string, appUrl: string) =>
      startTestSidecar({
        ...(await meshSidecarConfig(h, name, { servers: [ps.address], stateDir })),
        inbound: { app: appUrl },
        log: { level: 'warn', accessLog: false },
      } as Parameters<typeof startTestSidecar>[0]);
    orders = await sidecar('orders', app.url);
    frontend = await sidecar('frontend', 'http://127.0.0.1:1');
    // The registry push (orders' endpoint) and the policy reach frontend and orders asynchronously.
    await eventually(() => call('/orders/1'), { until: (status) => status === 200, timeoutMs: 10_000, what: "call('/orders/1') to answer 200" });
    if ((await call('/secret/1')) !== 403) throw new Error('the mesh did not come up with the DENY policy in force');
    reached.clear();
  });
  afterAll(async () => {
    await frontend?.drain(200);
    await orders?.drain(200);
    await ps?.close();
    await app?.close();
    await h?.close();
    await rm(stateDir, { recursive: true, force: true });
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
