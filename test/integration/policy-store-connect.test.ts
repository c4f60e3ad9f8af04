import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisClient } from '../../src/core/redis-client.ts';
import { issueCert } from '../helpers/mesh-pki.ts';
import { redisReplicaKit } from '../helpers/policy-redis.ts';
import { freePort } from '../helpers/process.ts';
import type { TestRedis } from '../helpers/redis.ts';
import { redisSkipReason, startTestRedis } from '../helpers/redis.ts';
import type { PolicyHarness } from './policy-server-harness.ts';
import { createPolicyHarness } from './policy-server-harness.ts';

/*
 * How a policy server reaches Redis with `store: redis`, on real servers:
 * as an ACL user whose password is read from a file (the default user
 * turned off, the user allowed only the store's key prefix and channels),
 * and through Sentinel, which names the primary.
 */

const skip = redisSkipReason();

/** redis-server in Sentinel mode watching the primary on `primaryPort`, ready once it monitors it. */
async function startSentinel(dir: string, primaryPort: number): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const conf = path.join(dir, `sentinel-${port}.conf`); // Sentinel rewrites its file: a writable copy
  await writeFile(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor mesh 127.0.0.1 ${primaryPort} 1\n`);
  const child = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`sentinel exited ${code}: ${out}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('+monitor master mesh')) resolve();
    });
  });
  child.stdout!.resume();
  return { port, child };
}

/** redis-server serving TLS only, with the given certificate, ready once it accepts. */
async function startTlsRedis(dir: string, files: { ca: string; cert: string; key: string }): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      files.cert,
      '--tls-key-file',
      files.key,
      '--tls-ca-cert-file',
      files.ca,
      '--tls-auth-clients',
      'no',
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--dir',
      dir,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`TLS redis-server exited ${code}: ${out}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('Ready to accept connections')) resolve();
    });
  });
  child.stdout!.resume();
  return { port, child };
}

describe.skipIf(skip !== undefined)('policy store connections (store: redis)', () => {
  let h: PolicyHarness;
  let redis: TestRedis;
  let admin: Redis;
  let sentinel: ChildProcess | undefined;

  beforeAll(async () => {
    redis = await startTestRedis();
    h = await createPolicyHarness();
    const setup = new Redis(redis.url);
    await setup.call('ACL', 'SETUSER', 'admin', 'on', '>admin-secret', '~*', '&*', '+@all');
    await setup.call('ACL', 'SETUSER', 'policy', 'on', '>policy-secret', '~meshgate:ps:*', '&meshgate:ps:*', '+@all', '-@dangerous', '+info');
    await setup.call('ACL', 'SETUSER', 'default', 'off');
    setup.disconnect();
    admin = new Redis(redis.url, { username: 'admin', password: 'admin-secret' });
  });
  afterAll(async () => {
    admin?.disconnect();
    sentinel?.kill('SIGKILL');
    await h?.close();
    await redis?.stop();
  });

  it('connects as an ACL user with its password from a file, and keeps to its key prefix', async () => {
    const passwordFile = path.join(h.dir, 'redis-policy.pass');
    await writeFile(passwordFile, 'policy-secret\n');
    const kit = await redisReplicaKit(h, redis.url);
    const base = await kit.overrides('acl', {});
    const ps = await h.start({ ...base, redis: { ...base.redis!, username: 'policy', passwordFile } });
    const orders = await h.identity('shop', 'orders');
    const sub = ps.subscribe(orders, { sidecarId: 'orders-acl', address: '10.1.0.1:15006' });
    await sub.next();
    await expect.poll(async () => (await admin.keys('*')).filter((k) => k.startsWith('meshgate:ps:registry:replica-')).length, { timeout: 5_000, interval: 20 }).toBe(1);
    expect((await admin.keys('*')).every((k) => k.startsWith('meshgate:ps:'))).toBe(true);
    const dump = JSON.stringify(ps.logs);
    expect(dump).not.toContain('policy-secret');
    sub.close();
    await ps.close();
  });

  it('speaks TLS (rediss://) to a Redis whose certificate a private CA signs, trusting only the configured caFile', async () => {
    const ca = await issueCert({ spiffeId: 'spiffe://test/ca', isCa: true, sans: [{ type: 'dns', value: 'redis-ca' }] });
    const server = await issueCert({ spiffeId: 'spiffe://test/redis', issuer: ca, sans: [{ type: 'ip', value: '127.0.0.1' }] });
    const files = { ca: path.join(h.dir, 'redis-ca.pem'), cert: path.join(h.dir, 'redis.crt'), key: path.join(h.dir, 'redis.key') };
    await writeFile(files.ca, ca.certPem);
    await writeFile(files.cert, server.certPem);
    await writeFile(files.key, server.keyPem);
    const tlsRedis = await startTlsRedis(h.dir, files);
    try {
      const url = `rediss://127.0.0.1:${tlsRedis.port}`;
      // The system roots do not know the private CA: without caFile the handshake fails.
      const untrusting = createRedisClient({ url }, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      const refused: string[] = [];
      untrusting.on('error', (err: Error) => refused.push(err.message));
      await expect(untrusting.connect()).rejects.toThrow();
      expect(refused.join('; ')).toMatch(/certificate/i);
      untrusting.disconnect();

      const kit = await redisReplicaKit(h, url);
      const base = await kit.overrides('tls', {});
      const ps = await h.start({ ...base, redis: { ...base.redis!, caFile: files.ca } });
      const billing = await h.identity('shop', 'billing');
      const sub = ps.subscribe(billing, { sidecarId: 'billing-tls', address: '10.1.0.3:15006' });
      await sub.next();
      const reader = createRedisClient({ url, caFile: files.ca }, {});
      await expect
        .poll(
          async () => {
            const keys = (await reader.keys('meshgate:ps:registry:replica-*')).filter((k) => !k.endsWith(':replicas'));
            return (await Promise.all(keys.map((k) => reader.get(k)))).some((b) => b?.includes('10.1.0.3:15006'));
          },
          { timeout: 5_000, interval: 20 },
        )
        .toBe(true);
      reader.disconnect();
      sub.close();
      await ps.close();
    } finally {
      tlsRedis.child.kill('SIGKILL');
    }
  });

  it('finds the primary through Sentinel', async () => {
    // Sentinel talks to the primary as the admin user here.
    const s = await (async () => {
      const setup = new Redis(redis.url, { username: 'admin', password: 'admin-secret' });
      await setup.call('ACL', 'SETUSER', 'default', 'on', 'nopass', '~*', '&*', '+@all');
      setup.disconnect();
      return startSentinel(h.dir, redis.port);
    })();
    sentinel = s.child;
    const kit = await redisReplicaKit(h, 'redis://unused');
    const base = await kit.overrides('sentinel', {});
    const ps = await h.start({ ...base, redis: { ...base.redis!, url: 'redis://sentinel', sentinel: { name: 'mesh', addresses: [`127.0.0.1:${s.port}`] } } });
    const payments = await h.identity('shop', 'payments');
    const sub = ps.subscribe(payments, { sidecarId: 'payments-sentinel', address: '10.1.0.2:15006' });
    await sub.next();
    await expect
      .poll(
        async () => {
          const keys = (await admin.keys('meshgate:ps:registry:replica-*')).filter((k) => !k.endsWith(':replicas'));
          const bodies = await Promise.all(keys.map((k) => admin.get(k)));
          return bodies.some((b) => b?.includes('10.1.0.2:15006'));
        },
        { timeout: 5_000, interval: 20 },
      )
      .toBe(true);
    sub.close();
    await ps.close();
  });
});
