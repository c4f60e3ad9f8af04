import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import type { WireSnapshot } from '../../src/policy/policy-api.ts';
import type { RedisReplicaKit } from '../helpers/policy-redis.ts';
import { ADMIN_SUBJECT, adminCall, metric, readiness, redisReplicaKit } from '../helpers/policy-redis.ts';
import type { TestRedis } from '../helpers/redis.ts';
import { redisSkipReason, startTestRedis } from '../helpers/redis.ts';
import type { PolicyHarness, TestPolicyServer, TestSubscriber } from './policy-server-harness.ts';
import { createPolicyHarness, eventually } from './policy-server-harness.ts';

/*
 * #17: replicas with `store: redis` and no shared disk (each its own copy of
 * the policy folder, as a ConfigMap in each pod), on a real redis-server.
 * Sidecar-like gRPC subscribers spread over the replicas; every snapshot
 * must list every service, under one version, and admin writes made on one
 * replica must reach the subscribers of the others. Then Redis goes away
 * and comes back empty.
 */

const skip = redisSkipReason();
const authz = (namespace: string, name: string, services: string[], action = 'ALLOW'): string =>
  `apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n  selector:\n    services: [${services.join(', ')}]\n  action: ${action}\n  rules:\n    - to:\n        - methods: [GET]\n`;
const CONFIGMAP = { 'shop/orders.yaml': authz('shop', 'orders-get', ['orders']) };
const names = (s: WireSnapshot): string[] => s.services.map((svc) => svc.name);
const endpointsOf = (s: WireSnapshot, service: string): string[] => s.services.find((svc) => svc.name === service)?.endpoints.map((e) => e.address) ?? [];

describe.skipIf(skip !== undefined)('policy-server replicas on Redis (store: redis)', () => {
  let h: PolicyHarness;
  let redis: TestRedis;
  let kit: RedisReplicaKit;
  const replicas: TestPolicyServer[] = [];
  const ids: Record<string, WorkloadCredentials> = {};

  const start = async (name: string): Promise<TestPolicyServer> => {
    const ps = await h.start(await kit.overrides(name, CONFIGMAP));
    replicas.push(ps);
    return ps;
  };

  beforeAll(async () => {
    redis = await startTestRedis();
    h = await createPolicyHarness();
    kit = await redisReplicaKit(h, redis.url);
    for (const svc of ['orders', 'payments', 'frontend', 'stock']) ids[svc] = await h.identity('shop', svc);
  });
  afterAll(async () => {
    await h?.close();
    await redis?.stop();
  });

  it('two, then three replicas: sidecars spread over them, every subscriber sees every service under one version', async () => {
    const [a, b] = await Promise.all([start('a'), start('b')]);
    const subs: TestSubscriber[] = [];
    subs.push(a.subscribe(ids.orders!, { sidecarId: 'orders-1', address: '10.0.0.1:15006' }));
    subs.push(b.subscribe(ids.payments!, { sidecarId: 'payments-1', address: '10.0.0.2:15006' }));
    const watchA = a.subscribe(ids.frontend!, { sidecarId: 'frontend-a' });
    const watchB = b.subscribe(ids.frontend!, { sidecarId: 'frontend-b' });
    const two = (s: WireSnapshot): boolean => names(s).join() === 'orders,payments';
    const [fromA, fromB] = await Promise.all([watchA.until(two), watchB.until(two)]);
    expect(fromA.version).toBe(fromB.version);
    expect(fromA.services).toEqual(fromB.services);

    const c = await start('c');
    subs.push(c.subscribe(ids.stock!, { sidecarId: 'stock-1', address: '10.0.0.3:15006' }));
    const watchC = c.subscribe(ids.frontend!, { sidecarId: 'frontend-c' });
    const three = (s: WireSnapshot): boolean => names(s).join() === 'orders,payments,stock';
    const all = await Promise.all([watchA.until(three), watchB.until(three), watchC.until(three)]).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([watchA, watchB, watchC].map((w) => w.received.map(names)))}`);
    });
    expect(new Set(all.map((s) => s.version)).size).toBe(1);
    expect(endpointsOf(all[2]!, 'orders')).toEqual(['10.0.0.1:15006']);
    expect(endpointsOf(all[0]!, 'stock')).toEqual(['10.0.0.3:15006']);

    // A sidecar leaving its replica leaves every registry; a replica closing takes its sidecars with it.
    subs[1]!.close();
    const noPayments = (s: WireSnapshot): boolean => !names(s).includes('payments');
    await Promise.all([watchA.until(noPayments), watchC.until(noPayments)]);
    await c.close();
    replicas.splice(replicas.indexOf(c), 1);
    await watchA.until((s) => !names(s).includes('stock'));
    for (const s of [...subs, watchA, watchB]) s.close();
  });

  it('an admin write through one replica is served by the others under one version, with its author and audit entry', async () => {
    const [a, b] = replicas as [TestPolicyServer, TestPolicyServer];
    const onA = a.subscribe(ids.orders!, { sidecarId: 'orders-admin-a' });
    const onB = b.subscribe(ids.orders!, { sidecarId: 'orders-admin-b' });
    // The previous test's sidecars have left: both replicas settle on an empty registry first.
    const settled = (s: WireSnapshot): boolean => s.services.length === 0;
    const [beforeA, beforeB] = await Promise.all([onA.until(settled), onB.until(settled)]);
    expect(beforeA.version).toBe(beforeB.version);
    expect(beforeA.documents.map((d) => d.name)).toEqual(['orders-get']);
    const token = await kit.token();
    const put = await adminCall(a.server.adminPort, token, 'PUT', '/api/v1/documents/AuthorizationPolicy/shop/orders-deny-admin', authz('shop', 'orders-deny-admin', ['orders'], 'DENY'));
    expect(put.status, JSON.stringify(put.json)).toBe(201);
    expect(put.json.file).toBe('redis:shop/authorizationpolicy-orders-deny-admin.yaml');
    const denied = (s: WireSnapshot): boolean => s.documents.some((d) => d.name === 'orders-deny-admin');
    const [afterA, afterB] = await Promise.all([onA.until(denied, 2_000), onB.until(denied, 2_000)]);
    expect(afterB.version).toBe(afterA.version);
    expect(afterB.documents.map((d) => d.name)).toEqual(['orders-deny-admin', 'orders-get']);

    // Every replica reads the same audit trail, with the author.
    const audit = await adminCall(b.server.adminPort, token, 'GET', '/api/v1/audit?limit=5');
    expect(audit.json.entries).toEqual([
      expect.objectContaining({ action: 'put', document: 'AuthorizationPolicy/shop/orders-deny-admin', result: 'applied', actor: expect.objectContaining({ subject: ADMIN_SUBJECT }) }),
    ]);

    // The ConfigMap's documents are not the API's to change.
    const folderDoc = await adminCall(b.server.adminPort, token, 'PUT', '/api/v1/documents/AuthorizationPolicy/shop/orders-get', authz('shop', 'orders-get', ['orders', 'stock']));
    expect(folderDoc.status).toBe(409);
    expect(folderDoc.json).toMatchObject({ code: 'admin.read_only' });
    const folderDelete = await adminCall(b.server.adminPort, token, 'DELETE', '/api/v1/documents/AuthorizationPolicy/shop/orders-get');
    expect(folderDelete.status).toBe(409);

    // A delete through B reaches A.
    const del = await adminCall(b.server.adminPort, token, 'DELETE', '/api/v1/documents/AuthorizationPolicy/shop/orders-deny-admin');
    expect(del.status).toBe(200);
    await onA.until((s) => s.documents.map((d) => d.name).join() === 'orders-get');
    onA.close();
    onB.close();
  });

  it('Redis down: replicas keep their registry and documents, /ready says degraded (200), writes 503; Redis back empty: state written back', async () => {
    const [a, b] = replicas as [TestPolicyServer, TestPolicyServer];
    const token = await kit.token();
    const put = await adminCall(a.server.adminPort, token, 'PUT', '/api/v1/documents/AuthorizationPolicy/shop/stock-deny', authz('shop', 'stock-deny', ['orders'], 'DENY'));
    expect(put.status).toBe(201);
    const orders = b.subscribe(ids.orders!, { sidecarId: 'orders-outage', address: '10.0.0.9:15006' });
    const watchA = a.subscribe(ids.frontend!, { sidecarId: 'frontend-outage' });
    const full = await watchA.until((s) => endpointsOf(s, 'orders').includes('10.0.0.9:15006'));
    const fullAt = watchA.received.indexOf(full);
    expect(await metric(a.server.adminPort, 'meshgate_policy_store_connected')).toBe(1);

    await redis.stop();
    await eventually(() => a.logs.some((l) => String(l.msg).startsWith('policy store (Redis) unreachable')), 5_000, 'A to notice');
    const ready = await readiness(a.server.adminPort);
    expect(ready.status).toBe(200);
    expect(ready.body.checks.store).toMatch(/^degraded: Redis unreachable since /);
    expect(await metric(a.server.adminPort, 'meshgate_policy_store_connected')).toBe(0);
    expect(await metric(a.server.adminPort, 'meshgate_policy_store_errors_total')).toBeGreaterThan(0);
    const refused = await adminCall(a.server.adminPort, token, 'PUT', '/api/v1/documents/AuthorizationPolicy/shop/late', authz('shop', 'late', ['orders']));
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({ code: 'admin.store_unavailable' });
    // Three leases without Redis: A still serves B's sidecar and the admin DENY. The outage's length is
    // the point (while Redis is away no renewal runs, so no event marks a lease passing): a fixed span.
    await new Promise((resolve) => setTimeout(resolve, 2_700));
    const lateFrontend = a.subscribe(ids.frontend!, { sidecarId: 'frontend-during-outage' });
    const during = await lateFrontend.next();
    expect(during.version).toBe(full.version);
    expect(endpointsOf(during, 'orders')).toContain('10.0.0.9:15006');
    expect(a.server.store.documents().map((d) => d.key)).toContain('AuthorizationPolicy/shop/stock-deny');

    // Redis back with nothing in it (no persistence): the replicas write back what they hold.
    await redis.start();
    await eventually(
      () => a.logs.some((l) => String(l.msg).startsWith('policy store (Redis) reachable again')) && b.logs.some((l) => String(l.msg).startsWith('policy store (Redis) reachable again')),
      10_000,
      'both back',
    );
    expect((await readiness(a.server.adminPort)).body.checks.store).toBe('ok');
    expect(await metric(a.server.adminPort, 'meshgate_policy_store_connected')).toBe(1);
    expect([...a.logs, ...b.logs].filter((l) => String(l.msg).startsWith('Redis had no admin documents'))).toHaveLength(1);
    const docs = await adminCall(b.server.adminPort, token, 'GET', '/api/v1/documents?namespace=shop');
    expect((docs.json.documents as Array<{ name: string }>).map((d) => d.name)).toEqual(['orders-get', 'stock-deny']);
    // Registrations flow again: a new sidecar on B reaches A's subscribers.
    const more = b.subscribe(ids.payments!, { sidecarId: 'payments-after', address: '10.0.0.10:15006' });
    await watchA.until((s) => endpointsOf(s, 'payments').includes('10.0.0.10:15006'), 5_000);
    expect(watchA.received.slice(fullAt).every((s) => endpointsOf(s, 'orders').includes('10.0.0.9:15006'))).toBe(true);
    for (const s of [orders, watchA, lateFrontend, more]) s.close();
  });
});
