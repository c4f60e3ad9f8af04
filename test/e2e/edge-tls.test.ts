import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import type { TestCert } from '../helpers/mesh-pki.ts';
import { issueCert } from '../helpers/mesh-pki.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';

/** The serial of the certificate the edge listener shows right now. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()!.serialNumber);
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('edge TLS for callers outside the mesh', () => {
  let pair: AppAndSidecar;
  let sc: TestSidecar;
  let dir: string;
  let first: TestCert;
  beforeAll(async () => {
    pair = await startAppAndSidecar({ edge: true });
    ({ sc } = pair);
    ({ dir, cert: first } = pair.edge!);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('serves a TLS caller without a client certificate through the inbound chain, with no principal', async () => {
    const client = new Client(`https://127.0.0.1:${sc.edge!.port}`, { connect: { ca: first.certPem, checkServerIdentity: () => undefined } });
    try {
      const res = await client.request({ path: '/hello', method: 'GET', headers: { host: 'test', 'x-forwarded-client-cert': 'By=x;URI=spiffe://cluster.local/ns/kube-system/sa/admin' } });
      expect(res.statusCode).toBe(200);
      const seen = (await res.body.json()) as { url: string; headers: Record<string, string> };
      expect(seen.url).toBe('/hello');
      // A caller cannot claim a mesh identity by sending the header itself.
      expect(seen.headers['x-forwarded-client-cert']).toBeUndefined();
    } finally {
      await client.destroy();
    }
  });

  it('reloads the certificate when the files change, and keeps the old one when the new pair is broken', async () => {
    const firstSerial = new X509Certificate(first.certPem).serialNumber;
    expect(await servedSerial(sc.edge!.port)).toBe(firstSerial);
    const second = await issueCert({ spiffeId: 'spiffe://edge.example/ns/x/sa/gateway' });
    await writeFile(path.join(dir, 'tls.key'), second.keyPem);
    await writeFile(path.join(dir, 'tls.crt'), second.certPem);
    await expect.poll(() => servedSerial(sc.edge!.port), { timeout: 5_000, interval: 50 }).toBe(new X509Certificate(second.certPem).serialNumber);
    await writeFile(path.join(dir, 'tls.crt'), 'not a certificate');
    await expect.poll(() => sc.logs.some((l) => l.msg === 'edge TLS certificate not reloaded; keeping the previous one'), { timeout: 5_000 }).toBe(true);
    expect(await servedSerial(sc.edge!.port)).toBe(new X509Certificate(second.certPem).serialNumber);
  });
});
