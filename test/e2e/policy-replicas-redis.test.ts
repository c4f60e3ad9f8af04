import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { FRONTEND } from '../helpers/mesh.ts';
import type { RedisReplicaKit } from '../helpers/policy-redis.ts';
import { adminCall, redisReplicaKit } from '../helpers/policy-redis.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import type { RunningMeshgate } from '../helpers/process.ts';
import { freePort, spawnMeshgate } from '../helpers/process.ts';
import type { TestRedis } from '../helpers/redis.ts';
import { redisSkipReason, startTestRedis } from '../helpers/redis.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, eventually, meshSidecarConfig, TRUST_DOMAIN } from '../integration/policy-server-harness.ts';

/*
 * #17 end to end: two `meshgate policy-server` processes with `store: redis`,
 * each with its own copy of the policy folder (no shared disk), real
 * sidecars over mutual TLS spread across them: orders on replica A,
 * payments and frontend on replica B. Frontend knows orders only through
 * the registry A published in Redis. Then an admin write on B is enforced
 * by orders' sidecar on A; Redis is restarted under load; A is killed with
 * SIGKILL under load. The server's warm-up and the sidecars' endpoint hold
 * (#11) are off, so they cannot hide a registry that lost a service.
 */

const skip = redisSkipReason();
const allow = (service: string): string =>
  policyYaml('AuthorizationPolicy', `${service}-readers`, {
    selector: { services: [service] },
    action: 'ALLOW',
    rules: [{ from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET'], paths: ['/orders/*', '/admin/*'] }] }],
  });
const DENY_ADMIN = policyYaml('AuthorizationPolicy', 'orders-no-admin', { selector: { services: ['orders'] }, action: 'DENY', rules: [{ to: [{ paths: ['/admin/*'] }] }] });
const CONFIGMAP = { 'shop/orders.yaml': allow('orders'), 'shop/payments.yaml': allow('payments') };

interface Replica {
  readonly grpc: string;
  readonly adminPort: number;
  readonly logs: Array<Record<string, unknown>>;
  kill(): Promise<void>;
}

/** Calls from frontend's app at ~200/s, at most 32 in flight, outcomes counted per target. */
function startLoad(frontend: TestSidecar, targets: ReadonlyArray<{ host: string; path: string }>) {
  const agent = new Agent({ connections: 16 });
  const counts = new Map<string, number>();
  let inFlight = 0;
  let answered = 0;
  let n = 0;
  const timer = setInterval(() => {
    if (inFlight >= 32) return;
    inFlight++;
    const t = targets[n++ % targets.length]!;
    request(`${frontend.outboundUrl}${t.path}`, { headers: { host: t.host }, dispatcher: agent })
      .then(async (res) => {
        await res.body.dump();
        answered++;
        const key = `${t.host}${t.path} ${res.statusCode} ${res.headers['x-meshgate-reason'] ?? ''}`.trim();
        counts.set(key, (counts.get(key) ?? 0) + 1);
      })
      .catch((err: Error) => counts.set(`${t.host}${t.path} error ${err.message}`, (counts.get(`${t.host}${t.path} error ${err.message}`) ?? 0) + 1))
      .finally(() => inFlight--);
  }, 5);
  return {
    answered: () => answered,
    async stop(): Promise<Record<string, number>> {
      clearInterval(timer);
      await eventually(() => inFlight === 0, 5_000, 'calls in flight to finish');
      await agent.close();
      return Object.fromEntries([...counts].sort());
    },
  };
}

describe.skipIf(skip !== undefined)('policy-server replicas on Redis, as processes, with sidecars', () => {
  let h: PolicyHarness;
  let redis: TestRedis;
  let kit: RedisReplicaKit;
  let stateDir: string;
  const apps: TestServer[] = [];
  const sidecars: TestSidecar[] = [];
  const children: RunningMeshgate[] = [];
  let a: Replica;
  let b: Replica;
  let frontend: TestSidecar;

  /** `meshgate policy-server` in its own process, with its own policy folder. */
  async function spawnReplica(name: string): Promise<Replica> {
    const port = await freePort();
    const overrides = await kit.overrides(name, CONFIGMAP);
    const file = path.join(h.dir, `policy-server-${name}.yaml`);
    await writeFile(
      file,
      stringify({
        serverId: `replica-${name}`,
        identity: { trustDomain: TRUST_DOMAIN, ca: { address: h.ca.address, trustBundleFile: path.join(h.ca.dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile: 'policy-server.token' },
        listen: { address: '127.0.0.1', port },
        admin: { address: '127.0.0.1', port: 0 },
        push: { debounce: '20ms' },
        // No warm-up on the server, no hold in the sidecars: the shared registry alone must keep every route.
        registry: { warmup: '0s' },
        ...overrides,
      }),
    );
    const server = await spawnMeshgate(['policy-server', '--config', file], { listening: 'meshgate policy-server listening' });
    children.push(server);
    return { grpc: `127.0.0.1:${port}`, adminPort: server.listening.adminPort as number, logs: server.logs, kill: () => server.kill() };
  }

  async function sidecar(name: string, servers: string[], app: string): Promise<TestSidecar> {
    const base = await meshSidecarConfig(h, name, { servers, stateDir });
    const sc = await startTestSidecar({ ...base, policy: { ...base.policy, holdEndpoints: '0s' }, inbound: { app }, log: { level: 'warn', accessLog: false } } as Parameters<
      typeof startTestSidecar
    >[0]);
    sidecars.push(sc);
    return sc;
  }

  const status = async (host: string, p: string): Promise<number> => {
    const res = await request(`${frontend.outboundUrl}${p}`, { headers: { host } });
    await res.body.dump();
    return res.statusCode;
  };

  beforeAll(async () => {
    redis = await startTestRedis();
    h = await createPolicyHarness();
    kit = await redisReplicaKit(h, redis.url, { lease: '1s' });
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-redis-replicas-'));
    [a, b] = await Promise.all([spawnReplica('a'), spawnReplica('b')]);
    apps.push(await startHttpServer(echoHandler('orders')), await startHttpServer(echoHandler('payments')));
    await sidecar('orders', [a.grpc, b.grpc], apps[0]!.url);
    await sidecar('payments', [b.grpc, a.grpc], apps[1]!.url);
    frontend = await sidecar('frontend', [b.grpc, a.grpc], 'http://127.0.0.1:1');
  }, 90_000);
  afterAll(async () => {
    for (const sc of sidecars) await sc.drain(200).catch(() => undefined);
    for (const c of children) await c.kill();
    for (const app of apps) await app.close();
    await h?.close();
    await redis?.stop();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('frontend (on B) reaches orders (registered on A) and payments (on B); an admin DENY written on B is enforced by orders on A', { timeout: 30_000 }, async () => {
    await expect.poll(() => status('orders.shop', '/orders/1'), { timeout: 15_000, interval: 50 }).toBe(200);
    await expect.poll(() => status('payments.shop', '/orders/1'), { timeout: 15_000, interval: 50 }).toBe(200);
    expect(await status('orders.shop', '/admin/1')).toBe(200);
    const put = await adminCall(b.adminPort, await kit.token(), 'PUT', '/api/v1/documents/AuthorizationPolicy/shop/orders-no-admin', DENY_ADMIN);
    expect(put.status, JSON.stringify(put.json)).toBe(201);
    await expect.poll(() => status('orders.shop', '/admin/1'), { timeout: 5_000, interval: 20 }).toBe(403);
    expect(await status('orders.shop', '/orders/1')).toBe(200);
  });

  it('Redis restarted (empty) under load: no 404, every denied call still denied, the admin DENY survives', { timeout: 60_000 }, async () => {
    const load = startLoad(frontend, [
      { host: 'orders.shop', path: '/orders/1' },
      { host: 'orders.shop', path: '/admin/1' },
      { host: 'payments.shop', path: '/orders/1' },
    ]);
    await eventually(() => load.answered() >= 100, 10_000, '100 calls before the fault');
    await redis.stop();
    const before = load.answered();
    // Two leases without Redis: nobody can renew anything.
    await eventually(() => load.answered() - before >= 300, 15_000, '300 calls while Redis is down');
    await redis.start();
    for (const r of [a, b]) await eventually(() => r.logs.some((l) => String(l.msg).startsWith('policy store (Redis) reachable again')), 10_000, 'replicas to reconnect');
    const after = load.answered();
    await eventually(() => load.answered() - after >= 300, 15_000, '300 calls after Redis is back');
    const outcomes = await load.stop();
    console.log(`redis restart under load: ${JSON.stringify(outcomes)}`);
    expect(outcomes).toEqual({
      'orders.shop/admin/1 403 authz.denied': expect.any(Number),
      'orders.shop/orders/1 200': expect.any(Number),
      'payments.shop/orders/1 200': expect.any(Number),
    });
    expect(await status('orders.shop', '/admin/1')).toBe(403);
  });

  it('replica A killed with SIGKILL under load: orders fails over to B and registers there, no call 404s, A drops out of the registry', { timeout: 60_000 }, async () => {
    const load = startLoad(frontend, [
      { host: 'orders.shop', path: '/orders/1' },
      { host: 'orders.shop', path: '/admin/1' },
    ]);
    await eventually(() => load.answered() >= 100, 10_000, '100 calls before the fault');
    await a.kill();
    await eventually(() => b.logs.some((l) => l.msg === 'subscriber joined' && String(l.spiffeId).endsWith('/sa/orders')), 10_000, 'orders to register on B');
    await eventually(() => b.logs.some((l) => String(l.msg).startsWith('replica gone')), 10_000, "A to expire from B's view");
    const after = load.answered();
    await eventually(() => load.answered() - after >= 200, 15_000, '200 calls after A is gone');
    const outcomes = await load.stop();
    console.log(`replica SIGKILL under load: ${JSON.stringify(outcomes)}`);
    expect(outcomes).toEqual({ 'orders.shop/admin/1 403 authz.denied': expect.any(Number), 'orders.shop/orders/1 200': expect.any(Number) });
    const registry = await adminCall(b.adminPort, await kit.token(), 'GET', '/api/v1/registry');
    expect((registry.json.services as Array<{ name: string; endpoints: unknown[] }>).find((s) => s.name === 'orders')?.endpoints).toHaveLength(1);
  });
});
