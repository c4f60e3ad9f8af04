import { execFileSync } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { KeyType } from '../../../src/identity/key-material.ts';
import { createCsr, generateKeyPair } from '../../../src/identity/key-material.ts';
import { x509 } from '../../../src/identity/x509.ts';

/*
 * The sidecar's certificate request is encoded by hand (key-material.ts, to
 * keep @peculiar/x509 out of every pod): the CA's parser and OpenSSL must both
 * read it as the request @peculiar/x509 would have built.
 */
describe('the certificate request a workload sends its CA', () => {
  for (const type of ['ecdsa-p256', 'rsa-2048'] as KeyType[]) {
    it(`${type}: carries the public key and O=meshgate only, and its signature verifies (the CA's parser and OpenSSL)`, async () => {
      const keys = await generateKeyPair(type);
      const pem = await createCsr(keys, type);
      const csr = new x509.Pkcs10CertificateRequest(pem);
      expect(await csr.verify()).toBe(true);
      expect(csr.subject).toBe('O=meshgate');
      expect(csr.attributes).toEqual([]);
      expect(Buffer.from(csr.publicKey.rawData).equals(Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)))).toBe(true);
      expect(csr.signatureAlgorithm).toMatchObject(type === 'ecdsa-p256' ? { name: 'ECDSA', hash: { name: 'SHA-256' } } : { name: 'RSASSA-PKCS1-v1_5', hash: { name: 'SHA-256' } });
      const text = execFileSync('openssl', ['req', '-verify', '-noout', '-text'], { input: pem, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
      expect(text).toMatch(/Subject: O\s?=\s?meshgate/);
    });
  }

  it('a request signed by another key does not verify', async () => {
    const keys = await generateKeyPair('ecdsa-p256');
    const other = await generateKeyPair('ecdsa-p256');
    const forged = await createCsr({ publicKey: keys.publicKey, privateKey: other.privateKey }, 'ecdsa-p256');
    expect(await new x509.Pkcs10CertificateRequest(forged).verify()).toBe(false);
  });
});
