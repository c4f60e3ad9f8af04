import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyDocument } from '../../src/policy/types.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot as writeStaticSnapshot } from '../helpers/static-policy.ts';

/*
 * IP access through the real inbound listener. The policy is static: a
 * last-known-good snapshot written to the sidecar's stateDir before it
 * starts, which it enforces from boot while no policy server answers (the
 * configured one is a closed port; without mTLS it never connects anyway).
 * The test client sits on 127.0.0.1, which the `edge` policy trusts as a
 * proxy, so each call names its client in x-forwarded-for.
 */

const doc = policyDoc;
const writeSnapshot = (stateDir: string, service: string, documents: PolicyDocument[]) => writeStaticSnapshot(stateDir, { service }, documents);

const edgePolicy = doc('IPAccessPolicy', 'edge', {
  deny: ['203.0.113.0/24'],
  trustedProxies: ['127.0.0.1'],
  autoBan: { threshold: 3, window: '1m', duration: '10m' },
});
const noAdmin = doc('AuthorizationPolicy', 'no-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin/*'] }] }] });
const noLoopback = doc('IPAccessPolicy', 'no-loopback', { deny: ['127.0.0.0/8'] });

describe('IP access and auto-ban through the inbound listener', () => {
  let stateDir: string;
  let app: TestServer;
  let orders: TestSidecar;
  let payments: TestSidecar;

  const start = (service: string) =>
    startTestSidecar({
      workload: { service, namespace: 'shop' },
      inbound: { app: app.url },
      policy: { servers: ['127.0.0.1:1'], stateDir },
      authorization: { allowWhenNoPolicy: true },
      log: { level: 'warn', accessLog: false },
    });

  const call = async (sidecar: TestSidecar, p: string, xff?: string) => {
    const res = await request(`${sidecar.inboundUrl}${p}`, { headers: { host: 'orders.shop', ...(xff ? { 'x-forwarded-for': xff } : {}) } });
    const text = await res.body.text();
    const body = res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string; rule?: string; reason: string });
    return { status: res.statusCode, code: body?.code, rule: body?.rule, reason: body?.reason, retryAfter: res.headers['retry-after'] };
  };
  const admin = async (method: 'GET' | 'DELETE', p: string, headers: Record<string, string> = {}) => {
    const res = await request(`${orders.adminUrl}${p}`, { method, headers });
    const text = await res.body.text();
    return { status: res.statusCode, body: res.headers['content-type'] === 'application/json' ? (JSON.parse(text) as unknown) : text };
  };
  const metric = async (name: string): Promise<number | undefined> => {
    const text = (await admin('GET', '/metrics')).body as string;
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };

  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-ip-'));
    await writeSnapshot(stateDir, 'orders', [edgePolicy, noAdmin]);
    await writeSnapshot(stateDir, 'payments', [noLoopback]);
    app = await startHttpServer(echoHandler('orders'));
    orders = await start('orders');
    payments = await start('payments');
  });
  afterAll(async () => {
    await orders?.drain(200);
    await payments?.drain(200);
    await app?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a denied CIDR is refused with ip.denied, by the forwarded client behind a trusted proxy', async () => {
    expect(await call(orders, '/', '198.51.100.1')).toMatchObject({ status: 200 });
    expect(await call(orders, '/', '203.0.113.5')).toMatchObject({ status: 403, code: 'ip.denied', rule: 'shop/edge#deny', reason: 'address 203.0.113.5 is not allowed' });
    // The rightmost untrusted entry decides: a spoofed leftmost entry neither helps nor hurts.
    expect(await call(orders, '/', '198.51.100.1, 203.0.113.5')).toMatchObject({ status: 403, code: 'ip.denied' });
    expect(await call(orders, '/', '203.0.113.5, 198.51.100.1')).toMatchObject({ status: 200 });
    expect(app.hits()).toBe(2);
  });

  it('by the connection address when the peer is not a trusted proxy: x-forwarded-for cannot talk its way in', async () => {
    expect(await call(payments, '/')).toMatchObject({ status: 403, code: 'ip.denied', rule: 'shop/no-loopback#deny', reason: 'address 127.0.0.1 is not allowed' });
    expect(await call(payments, '/', '198.51.100.1')).toMatchObject({ status: 403, code: 'ip.denied' });
  });

  it('N refusals from another filter ban the address; GET /bans lists it; DELETE lifts it', async () => {
    const attacker = '198.51.100.9';
    for (let i = 0; i < 3; i++) expect(await call(orders, '/admin/users', attacker)).toMatchObject({ status: 403, code: 'authz.denied' });

    const banned = await call(orders, '/orders/1', attacker);
    expect(banned).toMatchObject({ status: 429, code: 'ip.banned', rule: 'shop/edge#autoBan' });
    expect(Number(banned.retryAfter)).toBeGreaterThan(590);
    expect(Number(banned.retryAfter)).toBeLessThanOrEqual(600);
    // Others behind the same proxy, and the deny-listed address refused earlier, are not banned.
    expect(await call(orders, '/orders/1', '198.51.100.1')).toMatchObject({ status: 200 });

    const bans = await admin('GET', '/bans');
    expect(bans.status).toBe(200);
    expect(bans.body).toEqual([{ address: attacker, until: expect.any(String), reason: 'authz.denied', count: 3 }]);
    const until = Date.parse((bans.body as Array<{ until: string }>)[0]!.until);
    expect(until - Date.now()).toBeGreaterThan(590_000);
    expect(await metric('meshgate_ip_bans_total')).toBe(1);
    expect(await metric('meshgate_ip_banned_addresses')).toBe(1);
    expect(orders.logs.some((l) => l.msg === 'address banned after repeated refused calls' && l.address === attacker)).toBe(true);

    expect(await admin('DELETE', `/bans/${attacker}`, { origin: 'https://evil.example' })).toMatchObject({ status: 403 });
    expect(await admin('DELETE', '/bans/not-an-address')).toMatchObject({ status: 400 });
    expect(await admin('DELETE', '/bans/198.51.100.10')).toMatchObject({ status: 404 });
    expect(await admin('DELETE', `/bans/::ffff:${attacker}`)).toEqual({ status: 200, body: { address: attacker, until: expect.any(String), reason: 'authz.denied', count: 3 } });

    expect(await call(orders, '/orders/1', attacker)).toMatchObject({ status: 200 });
    expect((await admin('GET', '/bans')).body).toEqual([]);
    expect(await metric('meshgate_ip_banned_addresses')).toBe(0);
    expect(await admin('DELETE', `/bans/${attacker}`)).toMatchObject({ status: 404 });
  });
});
