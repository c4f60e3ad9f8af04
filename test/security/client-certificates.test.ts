import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x509 } from '../../src/identity/x509.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import type { TestCert } from '../helpers/mesh-pki.ts';
import { issueCert, rootOf } from '../helpers/mesh-pki.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, attack catalogue: client certificates against the inbound mTLS
 * listener in STRICT mode. Each refused connection is closed before any HTTP
 * answer, logged once ('mTLS connection refused' with its reason), counted
 * once in meshgate_tls_handshake_errors_total{listener="inbound", reason},
 * and the app behind the sidecar sees nothing; a good certificate is then
 * served (the canary).
 */

const ID = 'spiffe://cluster.local/ns/shop/sa/frontend';
const GET = 'GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n';

interface Attempt {
  /** The client finished its side of the handshake (with TLS 1.3 the server may still refuse the certificate after that). */
  readonly handshake: boolean;
  /** Everything the server sent after the handshake. */
  readonly reply: string;
}

/** One TLS connection to `port`; after the handshake it sends one GET and reads until the server closes. */
function attempt(port: number, opts: tls.ConnectionOptions): Promise<Attempt> {
  return new Promise((resolve) => {
    let handshake = false;
    let reply = '';
    const socket = tls.connect({ host: '127.0.0.1', port, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'], ...opts });
    socket.once('secureConnect', () => {
      handshake = true;
      socket.write(GET);
    });
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    socket.on('error', () => {}); // the refusal itself: seen through 'close'
    socket.once('close', () => resolve({ handshake, reply }));
  });
}

/** Plaintext bytes on the STRICT port: what comes back before the server closes. */
function plaintext(port: number): Promise<string> {
  return new Promise((resolve) => {
    let reply = '';
    const socket = net.connect(port, '127.0.0.1', () => socket.write(GET));
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    socket.on('error', () => {});
    socket.once('close', () => resolve(reply));
  });
}

/**
 * The same P-256 private scalar as `signer`, labelled with `claimed`'s public
 * point: OpenSSL's key/certificate pairing check compares only the public
 * point, so the client presents `claimed`'s certificate and signs its
 * CertificateVerify with another key (a proof of possession that must fail).
 */
function mismatchedKey(signer: string, claimed: string): string {
  const der = (pem: string) => createPrivateKey(pem).export({ format: 'der', type: 'sec1' });
  const sec1 = Buffer.from(der(signer));
  const point = der(claimed).subarray(-65); // the uncompressed public point ends the SEC1 structure
  point.copy(sec1, sec1.length - 65);
  return createPrivateKey({ key: sec1, format: 'der', type: 'sec1' }).export({ format: 'pem', type: 'pkcs8' }).toString();
}

describe('client certificates on the STRICT inbound listener', () => {
  let ca: TestCa;
  let app: TestServer;
  let sc: TestSidecar;
  let good: TestCert;
  const certs: Record<string, TestCert> = {};
  const port = () => sc.inbound.port;
  const withCert = (cert: TestCert | undefined, extra: tls.ConnectionOptions = {}) => attempt(port(), { ca: ca.rootsPem, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}), ...extra });

  beforeAll(async () => {
    ca = await startTestCa();
    app = await startHttpServer(echoHandler('orders'));
    const tokenFile = path.join(ca.dir, 'orders.token');
    await writeFile(tokenFile, await ca.token('shop', 'orders'));
    sc = await startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      mtls: { mode: 'STRICT' },
      identity: { trustDomain: 'cluster.local', ca: { address: ca.address, trustBundleFile: path.join(ca.dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile },
      inbound: { app: app.url },
    } as Parameters<typeof startTestSidecar>[0]);
    const root = await rootOf(ca.dir);
    const hour = 3_600_000;
    good = await issueCert({ spiffeId: ID, issuer: root });
    certs.selfSigned = await issueCert({ spiffeId: ID });
    certs.foreignCa = await issueCert({ spiffeId: ID, issuer: await rootOf(await createCaMaterialDir()) });
    certs.expired = await issueCert({ spiffeId: ID, issuer: root, notBefore: new Date(Date.now() - 2 * hour), notAfter: new Date(Date.now() - hour) });
    certs.notYetValid = await issueCert({ spiffeId: ID, issuer: root, notBefore: new Date(Date.now() + hour), notAfter: new Date(Date.now() + 2 * hour) });
    certs.dnsOnly = await issueCert({ spiffeId: ID, issuer: root, sans: [{ type: 'dns', value: 'frontend.shop.svc' }] });
    certs.httpsUri = await issueCert({ spiffeId: ID, issuer: root, sans: [{ type: 'url', value: 'https://frontend.shop/' }] });
    certs.twoIds = await issueCert({
      spiffeId: ID,
      issuer: root,
      sans: [
        { type: 'url', value: ID },
        { type: 'url', value: 'spiffe://cluster.local/ns/kube-system/sa/admin' },
      ],
    });
    certs.foreignDomain = await issueCert({ spiffeId: 'spiffe://evil.example/ns/shop/sa/frontend', issuer: root });
    certs.caFlagged = await issueCert({ spiffeId: ID, issuer: root, isCa: true });
    certs.serverOnly = await issueCert({ spiffeId: ID, issuer: root, extendedKeyUsages: [x509.ExtendedKeyUsage.serverAuth] });
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    certs.wrongKey = { certPem: good.certPem, keyPem: mismatchedKey(other, good.keyPem) };
  }, 30_000);

  afterAll(async () => {
    await sc?.drain(100);
    await app?.close();
    await ca?.close();
  });

  it('the canary: a certificate of the mesh CA with one SPIFFE ID of the trust domain is served', async () => {
    const got = await withCert(good);
    expect(got.handshake).toBe(true);
    expect(got.reply).toMatch(/^HTTP\/1\.1 200 /);
  });

  it.each([
    ['no client certificate', 'no_client_certificate', undefined],
    ['a self-signed certificate', 'untrusted_certificate', 'selfSigned'],
    ['a certificate from a foreign CA', 'untrusted_certificate', 'foreignCa'],
    ['an expired certificate', 'certificate_expired', 'expired'],
    ['a certificate not yet valid', 'certificate_not_yet_valid', 'notYetValid'],
    ['a leaf with a DNS SAN and no SPIFFE URI', 'no_spiffe_id', 'dnsOnly'],
    ['a leaf whose only URI SAN is not spiffe://', 'no_spiffe_id', 'httpsUri'],
    ['a leaf with two SPIFFE IDs', 'no_spiffe_id', 'twoIds'],
    ['a SPIFFE ID of a foreign trust domain', 'foreign_trust_domain', 'foreignDomain'],
    ['a CA certificate (basicConstraints cA) used as a client certificate', 'not_a_client_certificate', 'caFlagged'],
    ['a leaf for serverAuth only (no clientAuth extended key usage)', 'not_a_client_certificate', 'serverOnly'],
    ['a certificate whose key does not match (wrong proof of possession)', 'key_mismatch', 'wrongKey'],
  ] as const)('%s: refused before any HTTP answer, logged and counted once as %s', async (_case, reason, name) => {
    const watch = await watchRefusal(sc, [app]);
    const got = await withCert(name === undefined ? undefined : certs[name]);
    expect(got.reply).not.toMatch(/HTTP\/1\.1/);
    await watch.refused({ reason, direction: 'inbound', message: /^mTLS connection refused$/, counter: { name: 'meshgate_tls_handshake_errors_total', labels: { listener: 'inbound', reason } } });
    expect((await withCert(good)).reply).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('TLS 1.1 (below the 1.2 minimum): the handshake fails, logged and counted once as unsupported_protocol', async () => {
    const watch = await watchRefusal(sc, [app]);
    // Security level 0 so that this client's OpenSSL offers TLS 1.1 at all.
    const got = await withCert(good, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
    expect(got).toEqual({ handshake: false, reply: '' });
    const reason = 'unsupported_protocol';
    await watch.refused({ reason, direction: 'inbound', message: /^mTLS connection refused$/, counter: { name: 'meshgate_tls_handshake_errors_total', labels: { listener: 'inbound', reason } } });
    expect((await withCert(good)).reply).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('plaintext HTTP on the STRICT port: closed without an answer, logged and counted once as plaintext', async () => {
    const watch = await watchRefusal(sc, [app]);
    expect(await plaintext(port())).toBe('');
    const reason = 'plaintext';
    await watch.refused({ reason, direction: 'inbound', message: /^mTLS connection refused$/, counter: { name: 'meshgate_tls_handshake_errors_total', labels: { listener: 'inbound', reason } } });
    expect((await withCert(good)).reply).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('no refusal log line carries key material', () => {
    for (const line of sc.logs) expect(JSON.stringify(line)).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE/);
  });
});
