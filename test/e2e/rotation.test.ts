import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { RunningCa } from '../../src/ca/ca-server.ts';
import { startCa } from '../../src/ca/ca-server.ts';
import { mintToken } from '../../src/ca/token-mint.ts';
import type { CaConfigInput } from '../../src/config/ca-schema.ts';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { systemClock } from '../../src/core/clock.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { noTracing } from '../../src/telemetry/tracing.ts';
import { createCaMaterialDir } from '../helpers/ca-fixture.ts';
import { freePort } from '../helpers/process.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** A CA on a fixed port with the real clock (certificates must be valid in real time), short leaves. */
async function runCa(dir: string, port: number, overrides: Partial<CaConfigInput> = {}): Promise<RunningCa> {
  const base = parseYaml(await readFile(path.join(dir, 'ca.yaml'), 'utf8')) as CaConfigInput;
  const input = {
    ...base,
    listen: { address: '127.0.0.1', port },
    admin: { address: '127.0.0.1', port: 0 },
    leaf: { ttl: '2s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] },
    rateLimit: { perIdentity: { requests: 10_000, window: '1m' } },
    log: { level: 'silent' },
    ...overrides,
  };
  const config = parseConfigText(JSON.stringify(input), 'rotation-ca.yaml', caConfigSchema);
  const logger = createLogger({ level: 'silent', name: 'ca', destination: new Writable({ write: (_c, _e, done) => done() }) });
  return startCa(config, { logger, clock: systemClock, configDir: dir, configFile: 'rotation-ca.yaml', tracing: noTracing('meshgate-ca') });
}

async function meshPair(dir: string, caPort: number, ttl: string) {
  const app = await startHttpServer(echoHandler('orders'));
  cleanups.push(() => app.close());
  const sidecar = async (name: string, extra: Record<string, unknown>): Promise<TestSidecar> => {
    const tokenFile = path.join(dir, `${name}.token`);
    const keyPem = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
    await writeFile(tokenFile, await mintToken({ keyPem, namespace: 'shop', serviceAccount: name, ttlMs: 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock }));
    const sc = await startTestSidecar({
      workload: { service: name, namespace: 'shop' },
      mtls: { mode: 'STRICT' },
      identity: { ca: { address: `127.0.0.1:${caPort}`, trustBundleFile: path.join(dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile, ttl, jitterFraction: 0.1 },
      log: { level: 'warn', accessLog: false },
      inbound: { app: 'http://127.0.0.1:1' },
      ...extra,
    } as Parameters<typeof startTestSidecar>[0]);
    cleanups.push(() => sc.drain(500));
    return sc;
  };
  const orders = await sidecar('orders', { inbound: { app: app.url } });
  const frontend = await sidecar('frontend', { services: [{ name: 'orders', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${orders.inbound.port}` }] }] });
  return { app, orders, frontend };
}

/**
 * A steady stream of calls (4 in parallel, each on a fresh connection now and
 * then) until `until` resolves; returns how many succeeded and failed.
 */
async function steadyLoad(frontend: TestSidecar, until: Promise<unknown>): Promise<{ ok: number; failed: string[] }> {
  let stop = false;
  void until.finally(() => (stop = true));
  const agent = new Agent({ connections: 4 });
  const failed: string[] = [];
  let ok = 0;
  const deadline = Date.now() + 60_000; // bounded whatever happens
  await Promise.all(
    [0, 1, 2, 3].map(async (worker) => {
      for (let i = 0; !stop && Date.now() < deadline; i++) {
        try {
          const res = await request(`${frontend.outboundUrl}/w${worker}/${i}`, { dispatcher: agent, headers: { host: 'orders' }, reset: i % 10 === 0 });
          await res.body.dump();
          if (res.statusCode === 200) ok++;
          else failed.push(`${res.statusCode} ${String(res.headers['x-meshgate-reason'])}`);
        } catch (err) {
          failed.push((err as Error).message);
        }
      }
    }),
  );
  await agent.close();
  return { ok, failed };
}

const renewalsOf = (sc: TestSidecar) => sc.identity!.manager.stats().issued;

describe('certificate rotation under load', () => {
  it('rotates leaves every two seconds on both sides with zero failed calls', async () => {
    const dir = await createCaMaterialDir();
    const caPort = await freePort();
    // 4 s leaves renewed at half-life: three rotations in ~6 s, with room for a loaded 2-CPU machine.
    const ca = await runCa(dir, caPort, { leaf: { ttl: '4s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] } });
    cleanups.push(() => ca.close());
    const { orders, frontend } = await meshPair(dir, caPort, '4s');
    const startOrders = renewalsOf(orders);
    const startFrontend = renewalsOf(frontend);
    const threeRotations = expect.poll(() => Math.min(renewalsOf(orders) - startOrders, renewalsOf(frontend) - startFrontend), { timeout: 30_000, interval: 100 }).toBeGreaterThanOrEqual(3);
    const result = await steadyLoad(frontend, threeRotations);
    await threeRotations;
    expect(result.failed).toEqual([]);
    expect(result.ok).toBeGreaterThan(50);
  });

  it('keeps serving while the CA is away longer than a rotation, and resumes rotating when it is back', async () => {
    const dir = await createCaMaterialDir();
    const caPort = await freePort();
    // Long enough that a loaded CI machine still gets several failed renewals in before expiry.
    let ca = await runCa(dir, caPort, { leaf: { ttl: '10s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] } });
    const { orders, frontend } = await meshPair(dir, caPort, '10s');
    await ca.close();
    const failuresBefore = orders.identity!.manager.stats().failures;
    const renewalsBefore = renewalsOf(orders);
    // Away for longer than the renewal point (half of the lifetime).
    const caAway = expect.poll(() => orders.identity!.manager.stats().failures, { timeout: 15_000, interval: 100 }).toBeGreaterThan(failuresBefore + 1);
    const whileAway = await steadyLoad(frontend, caAway);
    await caAway;
    expect(whileAway.failed).toEqual([]);
    expect(orders.identity!.manager.valid()).toBe(true);
    ca = await runCa(dir, caPort, { leaf: { ttl: '10s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] } });
    cleanups.push(() => ca.close());
    await expect.poll(() => renewalsOf(orders), { timeout: 15_000, interval: 100 }).toBeGreaterThan(renewalsBefore);
    const after = await request(`${frontend.outboundUrl}/after`, { headers: { host: 'orders' } });
    expect(after.statusCode).toBe(200);
    await after.body.dump();
  });

  it('rotates the root with an overlap (new root trusted, then used, then the old one dropped) with zero failed calls', async () => {
    const dir = await createCaMaterialDir();
    const next = await createCaMaterialDir();
    const oldRoot = path.join(dir, 'root-ca.pem');
    const newRoot = path.join(next, 'root-ca.pem');
    const bundle = path.join(dir, 'trust-bundle.pem');
    const caPort = await freePort();
    // Leaves outlive a CA restart on a loaded machine; renewals still come every ~2 s.
    let ca = await runCa(dir, caPort, { leaf: { ttl: '4s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] } });
    const { orders, frontend } = await meshPair(dir, caPort, '4s');
    const phases: Array<{ signing: { certFile: string; keyFile: string; chainFiles: string[] }; roots: string[] }> = [
      // 1. Trust both roots, still sign with the old one: every sidecar learns the new root at its next renewal.
      { signing: { certFile: oldRoot, keyFile: path.join(dir, 'root-ca.key'), chainFiles: [] }, roots: [oldRoot, newRoot] },
      // 2. Sign with the new root: peers already trust it.
      { signing: { certFile: newRoot, keyFile: path.join(next, 'root-ca.key'), chainFiles: [] }, roots: [oldRoot, newRoot] },
      // 3. Drop the old root once every certificate has been renewed from the new one.
      { signing: { certFile: newRoot, keyFile: path.join(next, 'root-ca.key'), chainFiles: [] }, roots: [newRoot] },
    ];
    const rotate = (async () => {
      for (const phase of phases) {
        const pem = (await Promise.all(phase.roots.map((f) => readFile(f, 'utf8')))).join('');
        await writeFile(bundle, pem);
        await ca.close();
        const [o, f] = [renewalsOf(orders), renewalsOf(frontend)];
        ca = await runCa(dir, caPort, { signing: phase.signing, trustBundle: { files: phase.roots }, leaf: { ttl: '4s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] } });
        // A renewal counted after the old CA closed was signed by this phase's CA: every live
        // certificate and bundle now comes from this phase.
        await expect.poll(() => Math.min(renewalsOf(orders) - o, renewalsOf(frontend) - f), { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(1);
      }
    })();
    const result = await steadyLoad(frontend, rotate);
    await rotate;
    cleanups.push(() => ca.close());
    expect(result.failed).toEqual([]);
    expect(result.ok).toBeGreaterThan(50);
    const creds = orders.identity!.manager.current()!;
    expect(creds.trustBundlePem).toHaveLength(1);
    expect(creds.trustBundlePem[0]).toBe(await readFile(newRoot, 'utf8'));
  });
});

describe('readiness follows the certificate', () => {
  it('boots with the CA away: admin answers, /ready says why; ready once the CA is up; fails closed after expiry', async () => {
    const dir = await createCaMaterialDir();
    const [caPort, adminPort, inboundPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const tokenFile = path.join(dir, 'orders.token');
    const keyPem = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
    await writeFile(tokenFile, await mintToken({ keyPem, namespace: 'shop', serviceAccount: 'orders', ttlMs: 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock }));
    const app = await startHttpServer(echoHandler('orders'));
    cleanups.push(() => app.close());
    const starting = startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      listeners: { outbound: { address: '127.0.0.1', port: 0 }, inbound: { address: '127.0.0.1', port: inboundPort }, admin: { address: '127.0.0.1', port: adminPort } },
      mtls: { mode: 'STRICT' },
      identity: { ca: { address: `127.0.0.1:${caPort}`, trustBundleFile: path.join(dir, 'trust-bundle.pem'), serverName: 'localhost', timeout: '1s' }, tokenFile, ttl: '2s' },
      log: { level: 'warn', accessLog: false },
      inbound: { app: app.url },
      // The sidecar calls its own inbound listener over mTLS: a peer that accepts it while its certificate is valid.
      services: [{ name: 'orders', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${inboundPort}` }] }],
    });
    const readiness = async () => {
      const res = await request(`http://127.0.0.1:${adminPort}/ready`).catch(() => undefined);
      return res ? { status: res.statusCode, body: (await res.body.json()) as { checks: Record<string, string> } } : undefined;
    };
    await expect.poll(async () => (await readiness())?.status, { timeout: 5_000, interval: 50 }).toBe(503);
    expect((await readiness())!.body.checks.certificate).not.toBe('ok');
    const ca = await runCa(dir, caPort);
    const sc = await starting;
    cleanups.push(() => sc.drain(200));
    await expect.poll(async () => (await readiness())?.status, { timeout: 5_000, interval: 50 }).toBe(200);
    const before = await request(`${sc.outboundUrl}/`, { headers: { host: 'orders' }, reset: true });
    expect(before.statusCode).toBe(200);
    await before.body.dump();
    await ca.close();
    // Nobody renews: once the 2 s certificate expires the sidecar is not ready and makes no mesh connection.
    await expect.poll(async () => (await readiness())?.status, { timeout: 10_000, interval: 100 }).toBe(503);
    expect(sc.identity!.manager.valid()).toBe(false);
    const res = await request(`${sc.outboundUrl}/`, { headers: { host: 'orders' } });
    expect(res.statusCode).toBe(503);
    expect(await res.body.json()).toMatchObject({ code: 'upstream.unavailable' });
  });
});
