import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../../src/filters/ratelimit/redis-store.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { redisSkipReason, startTestRedis } from '../helpers/redis.ts';
import type { TestRedis } from '../helpers/redis.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';

/*
 * Global rate limits against a real redis-server: two sidecars of one
 * workload share one limit, Redis outages follow each rule's failureMode,
 * and counting resumes when Redis is back. Policy comes from a static
 * snapshot (no policy server); the caller is 127.0.0.1, keyed by source.ip.
 */

const skip = redisSkipReason();
if (skip) console.log(`test/integration/ratelimit-redis.test.ts ${skip}`);

const limits = policyDoc('RateLimitPolicy', 'shared-limits', {
  rules: [
    { name: 'shared', match: { paths: ['/shared/*'] }, key: ['source.ip'], limit: { requests: 4, per: '1m' }, scope: 'global' },
    { name: 'strict', match: { paths: ['/strict/*'] }, key: ['source.ip'], limit: { requests: 1000, per: '1m' }, scope: 'global' },
    { name: 'lenient', match: { paths: ['/lenient/*'] }, key: ['source.ip'], limit: { requests: 2, per: '1m' }, scope: 'global', failureMode: 'local' },
    { name: 'open', match: { paths: ['/open/*'] }, key: ['source.ip'], limit: { requests: 1, per: '1m' }, scope: 'global', failureMode: 'allow' },
  ],
});

describe.skipIf(skip !== undefined)('global rate limits in Redis', () => {
  let redis: TestRedis;
  let app: TestServer;
  const dirs: string[] = [];
  let a: TestSidecar;
  let b: TestSidecar;

  const start = async (): Promise<TestSidecar> => {
    const stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-rl-'));
    dirs.push(stateDir);
    await writeSnapshot(stateDir, { service: 'orders' }, [limits]);
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

  beforeAll(async () => {
    redis = await startTestRedis();
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
    // failureMode local: the same 2-per-minute limit, counted by this sidecar alone.
    expect([(await call(a, '/lenient/1')).status, (await call(a, '/lenient/2')).status, (await call(a, '/lenient/3')).status]).toEqual([200, 200, 429]);
    expect((await call(b, '/lenient/1')).status).toBe(200);
    // failureMode allow: admitted uncounted.
    expect([(await call(a, '/open/1')).status, (await call(a, '/open/2')).status]).toEqual([200, 200]);
    expect(a.logs.filter((l) => l.msg === 'rate-limit store unavailable: global rules apply their failureMode until it is back')).toHaveLength(1);
    const metrics = await (await request(`${a.adminUrl}/metrics`)).body.text();
    expect(metrics).toContain('meshgate_ratelimit_decisions_total{policy="shop/shared-limits",rule="strict",decision="unavailable_denied"} 1');
    expect(metrics).toContain('meshgate_ratelimit_decisions_total{policy="shop/shared-limits",rule="lenient",decision="fallback_limited"} 1');

    await redis.start();
    const adminClient = new Redis(redis.url);
    await adminClient.call('ACL', 'SETUSER', 'user', 'on', '>s3cret', '~*', '+@all');
    await adminClient.quit();
    // ioredis reconnects with backoff (at most 2 s between tries): poll, bounded.
    const deadline = Date.now() + 10_000;
    let back = await call(a, '/strict/2');
    while (back.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      back = await call(a, '/strict/2');
    }
    expect(back.status).toBe(200);
    // The restarted Redis is empty: /open is counted again, from a full bucket.
    expect([(await call(a, '/open/3')).status, (await call(b, '/open/4')).status].sort()).toEqual([200, 429]);
  });
});
