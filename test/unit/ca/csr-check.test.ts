import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkCsr } from '../../../src/ca/csr-check.ts';
import { createCsr, generateKeyPair, x509 } from '../../../src/identity/x509.ts';

const BOTH = ['ecdsa-p256', 'rsa-2048'] as const;

async function rsaCsr(bits: number): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  return (await x509.Pkcs10CertificateRequestGenerator.create({ name: 'O=x', keys: keys as never, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } })).toString('pem');
}

describe('checkCsr', () => {
  it('accepts EC P-256 and RSA 2048 with a valid self-signature', async () => {
    expect(await checkCsr(await createCsr(await generateKeyPair('ecdsa-p256'), 'ecdsa-p256'), BOTH)).toMatchObject({ ok: true, keyType: 'ecdsa-p256' });
    expect(await checkCsr(await createCsr(await generateKeyPair('rsa-2048'), 'rsa-2048'), BOTH)).toMatchObject({ ok: true, keyType: 'rsa-2048' });
  });

  it('refuses RSA under 2048 bits', async () => {
    expect(await checkCsr(await rsaCsr(1024), BOTH)).toMatchObject({ ok: false, reason: 'ca.csr_key_type', message: expect.stringContaining('RSA 1024') });
  });

  it('refuses a key type the config leaves out', async () => {
    expect(await checkCsr(await createCsr(await generateKeyPair('rsa-2048'), 'rsa-2048'), ['ecdsa-p256'])).toMatchObject({ ok: false, reason: 'ca.csr_key_type' });
  });

  it('refuses Ed25519', async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify'])) as unknown as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'O=x', keys: keys as never, signingAlgorithm: { name: 'Ed25519' } });
    expect(await checkCsr(csr.toString('pem'), BOTH)).toMatchObject({ ok: false, reason: 'ca.csr_key_type' });
  });

  it('refuses a signature made by another key (no proof of possession)', async () => {
    const a = await generateKeyPair('ecdsa-p256');
    const b = await generateKeyPair('ecdsa-p256');
    // Public key of a, signed with the private key of b.
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'O=x',
      keys: { publicKey: a.publicKey, privateKey: b.privateKey } as never,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    expect(await checkCsr(csr.toString('pem'), BOTH)).toMatchObject({ ok: false, reason: 'ca.csr_signature' });
  });

  it.each([
    ['empty', ''],
    ['a certificate instead of a CSR', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'],
    ['base64 that is not DER', '-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8=\n-----END CERTIFICATE REQUEST-----\n'],
    ['an oversized body', `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(20_000)}\n-----END CERTIFICATE REQUEST-----\n`],
  ])('refuses %s as malformed', async (_name, pem) => {
    expect(await checkCsr(pem, BOTH)).toMatchObject({ ok: false, reason: 'ca.csr_malformed' });
  });
});
