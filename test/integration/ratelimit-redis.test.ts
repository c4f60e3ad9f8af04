import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../../src/filters/ratelimit/redis-store.ts';
import { eventually } from '../helpers/eventually.ts';
import type { TestRedis } from '../helpers/redis.ts';
import { redisSkipReason, startTestRedis } from '../helpers/redis.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';

/*
 * Global rate limits against a real redis-server: two sidecars of one
 * workload share one limit, Redis outages follow each rule's failureMode,
 * and counting resumes when Redis is back. Policy comes from a static
 * snapshot (no policy server); the caller is 127.0.0.1, keyed by source.ip.
 */

const skip = redisSkipReason();
if (skip) console.log(`test/integration/ratelimit-redis.test.ts ${skip}`);

/** Timer lateness allowed on a loaded 2-core CI machine, over a deadline. */
const SLACK_MS = 60;

const limits = policyDoc('RateLimitPolicy', 'shared-limits', {
  rules: [
    { name: 'shared', match: { paths: ['/shared/*'] }, key: ['source.ip'], limit: { requests: 4, per: '1m' }, scope: 'global' },
    { name: 'strict', match: { paths: ['/strict/*'] }, key: ['source.ip'], limit: { requests: 1000, per: '1m' }, scope: 'global' },
    { name: 'lenient', match: { paths: ['/lenient/*'] }, key: ['source.ip'], limit: { requests: 2, per: '1m' }, scope: 'global', failureMode: 'local' },
    { name: 'split', match: { paths: ['/split/*'] }, key: ['source.ip'], limit: { requests: 40, per: '1h' }, scope: 'global', failureMode: 'local' },
    {
      name: 'whole',
      match: { paths: ['/whole/*'] },
      key: ['source.ip'],
      limit: { requests: 40, per: '1h' },
      scope: 'global',
      failureMode: 'local',
      localFallback: 'per-replica',
    },
    { name: 'open', match: { paths: ['/open/*'] }, key: ['source.ip'], limit: { requests: 1, per: '1m' }, scope: 'global', failureMode: 'allow' },
  ],
});

const ordersReplicas = {
  name: 'orders',
  namespace: 'shop',
  endpoints: ['127.0.0.1:1', '127.0.0.1:2'].map((address) => ({ address, labels: {}, weight: 1 })),
  identities: [],
  external: false,
};

describe.skipIf(skip !== undefined)('global rate limits in Redis', () => {
  let redis: TestRedis;
  let app: TestServer;
  const dirs: string[] = [];
  let a: TestSidecar;
  let b: TestSidecar;
  let passwordFile: string | undefined;

  const start = async (): Promise<TestSidecar> => {
    const stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-rl-'));
    dirs.push(stateDir);
    // The registry lists two orders replicas (addresses no call goes to): a split fallback divides by 2.
    await writeSnapshot(stateDir, { service: 'orders' }, [limits], [ordersReplicas]);
    return startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      inbound: { app: app.url },
      policy: { servers: ['127.0.0.1:1'], stateDir },
      authorization: { allowWhenNoPolicy: true },
      rateLimit: { redis: { url: `redis://user:s3cret@127.0.0.1:${redis.port}`, timeout: '200ms' } },
      log: { level: 'info', accessLog: false },
    });
  };

  const call = async (sidecar: TestSidecar, p: string) => {
    const startedAt = performance.now();
    const res = await request(`${sidecar.inboundUrl}${p}`, { headers: { host: 'orders.shop' } });
    const text = await res.body.text();
    const body = res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string; rule?: string });
    return { status: res.statusCode, code: body?.code, rule: body?.rule, retryAfter: res.headers['retry-after'], ms: performance.now() - startedAt };
  };

  /** Calls until one is admitted (polling: nothing outside the sidecar says when Redis is counted again). */
  const firstAdmitted = async (sidecar: TestSidecar, p: string, withinMs: number) => {
    const startedAt = performance.now();
    const admitted = await eventually(() => call(sidecar, p), { until: (c) => c.status === 200, timeoutMs: withinMs, intervalMs: 5, what: `${p} to be admitted` });
    return { ...admitted, afterMs: performance.now() - startedAt };
  };

  beforeAll(async () => {
    redis = await startTestRedis();
    passwordFile = path.join(await mkdtemp(path.join(tmpdir(), 'meshgate-rl-pw-')), 'password');
    dirs.push(path.dirname(passwordFile));
    await writeFile(passwordFile, 's3cret\n');
    // The sidecars authenticate as a user with a password, as production Redis should require.
    const adminClient = new Redis(redis.url);
    await adminClient.call('ACL', 'SETUSER', 'user', 'on', '>s3cret', '~*', '+@all');
    await adminClient.quit();
    app = await startHttpServer(echoHandler('orders'));
    a = await start();
    b = await start();
  });
  afterAll(async () => {
    await a?.drain(200);
    await b?.drain(200);
    await app?.close();
    await redis?.stop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('the store takes tokens atomically on Redis: two clients share one bucket whose key expires when it is full again', async () => {
    const one = createRedisStore({ url: redis.url, timeout: 200, keyPrefix: 'store-test:' });
    const two = createRedisStore({ url: redis.url, timeout: 200, keyPrefix: 'store-test:' });
    await Promise.all([one.whenReady(2000), two.whenReady(2000)]);
    const shape = { intervalMs: 1000, burst: 3 };
    const results = await Promise.all([one, two, one, two, one].map((s) => s.take('k', shape)));
    expect(results.filter((r) => r?.allowed)).toHaveLength(3);
    const refused = results.filter((r) => r && !r.allowed);
    expect(refused).toHaveLength(2);
    for (const r of refused) expect(r!.retryAfterMs).toBeGreaterThan(900);
    const inspect = new Redis(redis.url);
    const ttl = await inspect.pttl('store-test:k');
    expect(ttl).toBeGreaterThan(2000);
    expect(ttl).toBeLessThanOrEqual(3001);
    await inspect.quit();
    await Promise.all([one.close(), two.close()]);
  });

  it('two sidecars of one workload share a global limit: 4 calls in all, then 429 on both', async () => {
    const outcomes = [];
    for (let i = 0; i < 6; i++) outcomes.push(await call(i % 2 === 0 ? a : b, `/shared/${i}`));
    expect(outcomes.map((o) => o.status)).toEqual([200, 200, 200, 200, 429, 429]);
    expect(outcomes[4]).toMatchObject({ code: 'ratelimit.exceeded', rule: 'shop/shared-limits#shared' });
    expect(Number(outcomes[4]!.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(outcomes[4]!.retryAfter)).toBeLessThanOrEqual(15);
  });

  it('keeps the caller out of Redis: keys name the rule and a hash, never the address; the config dump hides the password', async () => {
    const inspect = new Redis(redis.url);
    const keys = await inspect.keys('meshgate:rl:*');
    await inspect.quit();
    expect(keys.some((k) => k.startsWith('meshgate:rl:shop/shared-limits#shared@15000000/4:'))).toBe(true);
    expect(keys.join('\n')).not.toContain('127.0.0.1');
    const dump = await (await request(`${a.adminUrl}/config_dump`)).body.text();
    expect(dump).not.toContain('s3cret');
    expect(JSON.parse(dump)).toMatchObject({ rateLimit: { redis: { url: `redis://127.0.0.1:${redis.port}`, status: 'ready' } } });
  });

  it('while Redis is down each rule follows its failureMode, answering at once; counting resumes when Redis is back', async () => {
    await redis.stop();
    const strict = await call(a, '/strict/1');
    expect(strict).toMatchObject({ status: 503, code: 'ratelimit.unavailable', rule: 'shop/shared-limits#strict' });
    expect(strict.ms).toBeLessThan(1000);
    // failureMode local: the 2-per-minute limit split between the two replicas the registry lists.
    expect([(await call(a, '/lenient/1')).status, (await call(a, '/lenient/2')).status]).toEqual([200, 429]);
    expect([(await call(b, '/lenient/1')).status, (await call(b, '/lenient/2')).status]).toEqual([200, 429]);
    // failureMode allow: admitted uncounted.
    expect([(await call(a, '/open/1')).status, (await call(a, '/open/2')).status]).toEqual([200, 200]);
    // 120 calls spread over both replicas: the split fallback holds the rule's total of 40, the per-replica one admits 40 on each.
    const admitted = async (p: string) => {
      const statuses = await Promise.all(Array.from({ length: 120 }, (_, i) => call(i % 2 === 0 ? a : b, `${p}/${i}`).then((r) => r.status)));
      return statuses.filter((status) => status === 200).length;
    };
    expect(await admitted('/split')).toBe(40);
    expect(await admitted('/whole')).toBe(80);
    expect(a.logs.filter((l) => l.msg === 'rate-limit store unavailable: global rules apply their failureMode until it is back')).toEqual([expect.objectContaining({ replicas: 2 })]);
    const metrics = await (await request(`${a.adminUrl}/metrics`)).body.text();
    expect(metrics).toContain('meshgate_ratelimit_decisions_total{policy="shop/shared-limits",rule="strict",decision="unavailable_denied"} 1');
    expect(metrics).toContain('meshgate_ratelimit_decisions_total{policy="shop/shared-limits",rule="lenient",decision="fallback_limited"} 1');

    await redis.start();
    const adminClient = new Redis(redis.url);
    await adminClient.call('ACL', 'SETUSER', 'user', 'on', '>s3cret', '~*', '+@all');
    await adminClient.quit();
    // Redis answers the sidecars' user from here: counting must resume within one probe interval, not a backoff.
    const answering = performance.now();
    const back = await firstAdmitted(a, '/strict/2', 5_000);
    expect(back.status).toBe(200);
    expect(back.afterMs).toBeLessThan(500);
    // Each sidecar probes on its own: b too must count in Redis again before both share /open's bucket.
    expect((await firstAdmitted(b, '/strict/2b', 5_000)).afterMs).toBeLessThan(500);
    // The restarted Redis is empty: /open is counted again, from a full bucket.
    expect([(await call(a, '/open/3')).status, (await call(b, '/open/4')).status].sort()).toEqual([200, 429]);
    expect(performance.now() - answering).toBeLessThan(2_000);
  });

  it("a sidecar's own stalled event loop is not taken for a Redis outage, before or after the batch leaves", async () => {
    const store = createRedisStore({ url: redis.url, username: 'user', passwordFile: passwordFile!, timeout: 100, keyPrefix: 'stall-test:' });
    const stall = (ms: number): void => {
      const until = performance.now() + ms; // the loop blocked, as under CPU pressure: nothing else runs
      while (performance.now() < until);
    };
    try {
      await store.whenReady(2_000);
      const shape = { intervalMs: 1, burst: 1000 };
      expect(await store.take('warm', shape)).toMatchObject({ allowed: true });
      // Stalled before the batch left: the time is the sidecar's, not Redis'.
      const before = store.take('before', shape);
      stall(300);
      expect(await before).toMatchObject({ allowed: true });
      // Stalled while the reply waited in the socket: the deadline reads it before giving up.
      const after = store.take('after', shape);
      await new Promise((r) => setImmediate(r));
      stall(300);
      expect(await after).toMatchObject({ allowed: true });
      expect(store.status()).toBe('ready');
    } finally {
      await store.close();
    }
  });

  it('a frozen Redis (SIGSTOP: connected, answering nothing) costs a call at most the timeout, then nothing; counting resumes once it answers', async () => {
    const store = createRedisStore({ url: redis.url, username: 'user', passwordFile: passwordFile!, timeout: 100, keyPrefix: 'frozen-test:' });
    try {
      await store.whenReady(2_000);
      const shape = { intervalMs: 1, burst: 1000 };
      expect(await store.take('warm', shape)).toMatchObject({ allowed: true });
      expect((await call(a, '/strict/3')).status).toBe(200);
      redis.freeze();
      // The store alone: every take is answered (undefined) within its 100 ms, batching included.
      const takes: number[] = [];
      for (let i = 0; i < 20; i++) {
        const startedAt = performance.now();
        const results = await Promise.all([store.take(`k${i}`, shape), store.take(`k${i}`, shape), store.take('other', shape)]);
        takes.push(performance.now() - startedAt);
        expect(results).toEqual([undefined, undefined, undefined]);
      }
      expect(Math.max(...takes)).toBeLessThan(100 + SLACK_MS);
      // Once the first batch timed out, the store knows Redis is not answering: the rest fail at once.
      expect(takes.filter((ms) => ms >= 50).length).toBeLessThanOrEqual(1);
      expect(store.status()).toBe('unresponsive');

      // Through the sidecar (timeout 200 ms): failureMode deny answers 503 within the timeout.
      const refused = [];
      for (let i = 0; i < 10; i++) refused.push(await call(a, `/strict/frozen-${i}`));
      for (const r of refused) expect(r).toMatchObject({ status: 503, code: 'ratelimit.unavailable' });
      expect(Math.max(...refused.map((r) => r.ms))).toBeLessThan(200 + SLACK_MS);
      const dump = JSON.parse(await (await request(`${a.adminUrl}/config_dump`)).body.text()) as { rateLimit: { redis: { status: string } } };
      expect(dump.rateLimit.redis.status).toBe('unresponsive');

      redis.thaw();
      const answering = performance.now();
      const resumed = await firstAdmitted(a, '/strict/thawed', 5_000);
      expect(resumed.status).toBe(200);
      expect(resumed.afterMs).toBeLessThan(500);
      expect(await store.take('after', shape)).toMatchObject({ allowed: true });
      expect(performance.now() - answering).toBeLessThan(2_000);
    } finally {
      redis.thaw();
      await store.close();
    }
  });
});
