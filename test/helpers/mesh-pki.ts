import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { generateKeyPair, privateKeyToPem, x509 } from '../../src/identity/x509.ts';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCert {
  readonly keyPem: string;
  readonly certPem: string;
}

async function importSigningKey(keyPem: string): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(keyPem).export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
}

/**
 * A workload certificate made by hand, for the cases a real CA never issues:
 * expired, another trust domain, signed by a stranger. Test-only.
 */
export async function issueCert(opts: {
  spiffeId: string;
  issuer?: { certPem: string; keyPem: string };
  notBefore?: Date;
  notAfter?: Date;
  isCa?: boolean;
  /** Extended key usages (OIDs); default serverAuth and clientAuth. */
  extendedKeyUsages?: string[];
  /** Subject alternative names instead of the one SPIFFE URI (e.g. a DNS name only). */
  sans?: Array<{ type: 'url' | 'dns' | 'ip'; value: string }>;
}): Promise<TestCert> {
  const keys = (await generateKeyPair('ecdsa-p256')) as webcrypto.CryptoKeyPair;
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = opts.notAfter ?? new Date(Date.now() + 3_600_000);
  const extensions = [
    new x509.BasicConstraintsExtension(opts.isCa ?? false, undefined, true),
    new x509.ExtendedKeyUsageExtension(opts.extendedKeyUsages ?? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    new x509.SubjectAlternativeNameExtension(opts.sans ?? [{ type: 'url', value: opts.spiffeId }], true),
  ];
  const serialNumber = randomBytes(8)
    .toString('hex')
    .replace(/^[89a-f]/, '1');
  const cert = opts.issuer
    ? await x509.X509CertificateGenerator.create({
        serialNumber,
        subject: '',
        issuer: new x509.X509Certificate(opts.issuer.certPem).subject,
        notBefore,
        notAfter,
        publicKey: keys.publicKey as never,
        signingKey: (await importSigningKey(opts.issuer.keyPem)) as never,
        signingAlgorithm: ALG,
        extensions,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ serialNumber, name: 'CN=stranger', notBefore, notAfter, keys: keys as never, signingAlgorithm: ALG, extensions });
  return { keyPem: await privateKeyToPem(keys.privateKey as never), certPem: cert.toString('pem') };
}

/** The root of a `certs init` folder, to sign test certificates with. */
export async function rootOf(dir: string): Promise<{ certPem: string; keyPem: string }> {
  return {
    certPem: await readFile(path.join(dir, 'root-ca.pem'), 'utf8'),
    keyPem: await readFile(path.join(dir, 'root-ca.key'), 'utf8'),
  };
}
