import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import type { TestCert } from '../helpers/mesh-pki.ts';
import { issueCert, rootOf } from '../helpers/mesh-pki.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/** A sidecar with identity from `ca`, for workload `ns/sa`. */
async function meshSidecar(ca: TestCa, name: string, extra: Record<string, unknown> = {}): Promise<TestSidecar> {
  const tokenFile = path.join(ca.dir, `${name}.token`);
  await writeFile(tokenFile, await ca.token('shop', name));
  return startTestSidecar({
    workload: { service: name, namespace: 'shop' },
    mtls: { mode: 'STRICT' },
    identity: { trustDomain: 'cluster.local', ca: { address: ca.address, trustBundleFile: path.join(ca.dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile },
    inbound: { app: 'http://127.0.0.1:1' },
    ...extra,
  } as Parameters<typeof startTestSidecar>[0]);
}

/** One HTTPS call to the orders sidecar's inbound listener presenting `cert` (or none). */
async function callInbound(sc: TestSidecar, roots: string, cert?: TestCert): Promise<number | string> {
  const client = new Client(`https://127.0.0.1:${sc.inbound.port}`, {
    allowH2: false,
    connect: { ca: roots, rejectUnauthorized: true, checkServerIdentity: () => undefined, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) },
  });
  try {
    const res = await client.request({ path: '/', method: 'GET', headers: { host: 'orders' } });
    await res.body.dump();
    return res.statusCode;
  } catch (err) {
    return (err as { code?: string }).code ?? 'error';
  } finally {
    await client.destroy();
  }
}

async function metric(sc: TestSidecar, pattern: RegExp): Promise<number> {
  const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  const match = pattern.exec(text);
  return match ? Number(match[1]) : 0;
}

describe('mutual TLS between sidecars', () => {
  let ca: TestCa;
  let app: TestServer;
  let orders: TestSidecar;
  let frontend: TestSidecar;

  beforeAll(async () => {
    ca = await startTestCa();
    app = await startHttpServer(echoHandler('orders'));
    orders = await meshSidecar(ca, 'orders', { inbound: { app: app.url } });
    frontend = await meshSidecar(ca, 'frontend', {
      services: [
        { name: 'orders', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${orders.inbound.port}` }] },
        // Same endpoint, but registered as another service: its certificate will not match.
        { name: 'billing', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${orders.inbound.port}` }] },
      ],
    });
  });
  afterAll(async () => {
    await frontend?.drain(200);
    await orders?.drain(200);
    await app?.close();
    await ca?.close();
  });

  it('a call succeeds and the app sees the caller principal', async () => {
    const res = await request(`${frontend.outboundUrl}/orders/1`, { headers: { host: 'orders' } });
    expect(res.statusCode).toBe(200);
    const seen = (await res.body.json()) as { headers: Record<string, string> };
    expect(seen.headers['x-forwarded-client-cert']).toBe('By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/shop/sa/frontend');
    const logs = orders.logs.filter((l) => l.log === 'access');
    expect(logs.at(-1)).toMatchObject({ source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend', status: 200 });
  });

  it('/config_dump shows SPIFFE ID, serial and notAfter; the expiry metric and /ready agree', async () => {
    const dump = (await (await request(`${orders.adminUrl}/config_dump`)).body.json()) as { certificate: Record<string, unknown> };
    expect(dump.certificate).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders', valid: true });
    expect(dump.certificate.serial).toMatch(/^[0-9A-F]+$/);
    const notAfter = Date.parse(String(dump.certificate.notAfter));
    expect(notAfter).toBeGreaterThan(Date.now());
    expect(JSON.stringify(dump)).not.toMatch(/PRIVATE KEY/);
    expect(await metric(orders, /^meshgate_cert_expiry_timestamp_seconds (\S+)$/m)).toBe(Math.floor(notAfter / 1000));
    const ready = await request(`${orders.adminUrl}/ready`);
    expect(await ready.body.json()).toMatchObject({ ready: true, checks: { certificate: 'ok' } });
  });

  it('a caller with a valid certificate of the mesh is accepted directly', async () => {
    const root = await rootOf(ca.dir);
    const cert = await issueCert({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/tester', issuer: root });
    expect(await callInbound(orders, ca.rootsPem, cert)).toBe(200);
  });

  it('refuses, counts, and never forwards: no certificate, self-signed, another CA, expired, another trust domain, plaintext', async () => {
    const hitsBefore = app.hits();
    const root = await rootOf(ca.dir);
    const otherCaDir = await createCaMaterialDir();
    const stranger = await issueCert({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/frontend', issuer: await rootOf(otherCaDir) });
    const selfSigned = await issueCert({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/frontend' });
    const expired = await issueCert({
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/frontend',
      issuer: root,
      notBefore: new Date(Date.now() - 7_200_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    const foreign = await issueCert({ spiffeId: 'spiffe://evil.example/ns/shop/sa/frontend', issuer: root });
    const counted = (reason: string) => metric(orders, new RegExp(`meshgate_tls_handshake_errors_total\\{listener="inbound",reason="${reason}"\\} (\\d+)`));

    for (const [cert, reason] of [
      [undefined, 'no_client_certificate'],
      [selfSigned, 'untrusted_certificate'],
      [stranger, 'untrusted_certificate'],
      [expired, 'certificate_expired'],
      [foreign, 'foreign_trust_domain'],
    ] as const) {
      const before = await counted(reason);
      const result = await callInbound(orders, ca.rootsPem, cert);
      expect(result).not.toBe(200);
      await expect.poll(() => counted(reason), { timeout: 2_000 }).toBe(before + 1);
    }
    const plain = await request(`${orders.inboundUrl}/`).then(
      (r) => r.statusCode,
      (e: { code?: string }) => e.code,
    );
    expect(plain).not.toBe(200);
    await expect.poll(() => counted('plaintext'), { timeout: 2_000 }).toBe(1);
    expect(app.hits()).toBe(hitsBefore);
  });

  it('outbound refuses an upstream whose SPIFFE ID is not the one expected for the destination', async () => {
    const hitsBefore = app.hits();
    const res = await request(`${frontend.outboundUrl}/`, { headers: { host: 'billing' } });
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: 'upstream.identity_mismatch' });
    expect(app.hits()).toBe(hitsBefore);
  });
});

describe('PERMISSIVE mode', () => {
  it('accepts mutual TLS and plaintext on the same port; only the mTLS caller has a principal', async () => {
    const ca = await startTestCa();
    const app = await startHttpServer(echoHandler('orders'));
    const orders = await meshSidecar(ca, 'orders', { inbound: { app: app.url }, mtls: { mode: 'PERMISSIVE' } });
    const frontend = await meshSidecar(ca, 'frontend', { services: [{ name: 'orders', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${orders.inbound.port}` }] }] });
    try {
      const viaMesh = await request(`${frontend.outboundUrl}/`, { headers: { host: 'orders' } });
      expect(((await viaMesh.body.json()) as { headers: Record<string, string> }).headers['x-forwarded-client-cert']).toContain('URI=spiffe://cluster.local/ns/shop/sa/frontend');
      const plain = await request(`${orders.inboundUrl}/`, { headers: { 'x-forwarded-client-cert': 'URI=spiffe://cluster.local/ns/shop/sa/admin' } });
      expect(plain.statusCode).toBe(200);
      expect(((await plain.body.json()) as { headers: Record<string, string> }).headers['x-forwarded-client-cert']).toBeUndefined();
    } finally {
      await frontend.drain(200);
      await orders.drain(200);
      await app.close();
      await ca.close();
    }
  });
});
