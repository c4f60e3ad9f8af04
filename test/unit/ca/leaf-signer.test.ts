import { X509Certificate } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaMaterial } from '../../../src/ca/ca-material.ts';
import { loadCaMaterial } from '../../../src/ca/ca-material.ts';
import { createLeafSigner } from '../../../src/ca/leaf-signer.ts';
import { generateKeyPair, x509 } from '../../../src/identity/x509.ts';
import { createCaMaterialDir } from '../../helpers/ca-fixture.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

const ID = 'spiffe://cluster.local/ns/shop/sa/web';

describe('createLeafSigner', () => {
  const clock = createFakeClock(Date.now());
  let dir: string;
  let material: CaMaterial;
  beforeAll(async () => {
    dir = await createCaMaterialDir({ intermediate: true, clock });
    material = await loadCaMaterial(
      { signing: { certFile: 'intermediate-ca.pem', keyFile: 'intermediate-ca.key', chainFiles: [] }, trustBundle: { files: ['trust-bundle.pem'] } },
      { clock, resolvePath: (f) => path.join(dir, f), configFile: 'ca.yaml' },
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function issue(opts: { type?: 'ecdsa-p256' | 'rsa-2048'; ttlMs?: number; random?: number } = {}) {
    const type = opts.type ?? 'ecdsa-p256';
    const keys = await generateKeyPair(type);
    const signer = await createLeafSigner(material, { clock, ...(opts.random === undefined ? {} : { randomBytes: (n: number) => Buffer.alloc(n, opts.random) }) });
    const leaf = await signer.sign({ publicKey: await x509.PublicKey.create(keys.publicKey), keyType: type, spiffeId: ID, ttlMs: opts.ttlMs ?? 3_600_000 });
    return { leaf, cert: new x509.X509Certificate(leaf.pem) };
  }

  it('makes an X.509-SVID: empty subject, one critical URI SAN, CA:false, digitalSignature, server+client auth, AKI = issuer SKI', async () => {
    const { cert } = await issue();
    expect(cert.subject).toBe('');
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.critical).toBe(true);
    expect(san.names.toJSON()).toEqual([{ type: 'url', value: ID }]);
    const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.ca, bc.critical]).toEqual([false, true]);
    const ku = cert.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.digitalSignature, true]);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    const issuerSki = material.signingCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
    expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(issuerSki);
    expect(cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toMatch(/^[0-9a-f]{40}$/);
    expect(cert.issuerName.toString()).toBe(material.signingCert.subjectName.toString());
    expect(new X509Certificate(Buffer.from(cert.rawData)).checkIssued(new X509Certificate(material.signingCert.toString('pem')))).toBe(true);
  });

  it('adds keyEncipherment for RSA keys', async () => {
    const { cert } = await issue({ type: 'rsa-2048' });
    expect(cert.getExtension(x509.KeyUsagesExtension)!.usages).toBe(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  });

  it('uses a positive 16-byte serial', async () => {
    expect((await issue({ random: 0xff })).leaf.serial).toBe(`7F${'FF'.repeat(15)}`);
    const zero = await issue({ random: 0x00 });
    expect(zero.leaf.serial).toBe(`01${'00'.repeat(15)}`);
    expect(zero.cert.serialNumber.toUpperCase()).toBe(zero.leaf.serial);
  });

  it('backdates notBefore one minute and honours the ttl', async () => {
    const { leaf } = await issue({ ttlMs: 7_200_000 });
    expect(Math.abs(leaf.notBefore.getTime() - (clock.now() - 60_000))).toBeLessThan(1_000);
    expect(Math.abs(leaf.notAfter.getTime() - (clock.now() + 7_200_000))).toBeLessThan(1_000);
  });

  it('never issues beyond the issuing chain', async () => {
    const keys = await generateKeyPair('ecdsa-p256');
    const soon = new Date(Math.floor(clock.now() / 1000) * 1000 + 600_000);
    const signer = await createLeafSigner({ ...material, chainNotAfter: soon }, { clock });
    const leaf = await signer.sign({ publicKey: await x509.PublicKey.create(keys.publicKey), keyType: 'ecdsa-p256', spiffeId: ID, ttlMs: 86_400_000 });
    expect(leaf.notAfter).toEqual(soon);
  });
});
