import { webcrypto } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../core/clock.ts';
import type { KeyType } from '../identity/x509.ts';
import { generateKeyPair, privateKeyToPem, x509 } from '../identity/x509.ts';
import { refuseExisting, writeMaterial } from './material-files.ts';

export interface CertsInitOptions {
  readonly outDir: string;
  readonly trustDomain: string;
  /** Key type of the CA keys (root and intermediate). The token-signing key is always ES256. */
  readonly keyType: KeyType;
  readonly intermediate: boolean;
  readonly rootTtlMs: number;
  readonly force: boolean;
  readonly clock: Clock;
}

export const CERTS_INIT_FILES = {
  rootCert: 'root-ca.pem',
  rootKey: 'root-ca.key',
  intermediateCert: 'intermediate-ca.pem',
  intermediateKey: 'intermediate-ca.key',
  tokenKey: 'token-signing.key',
  tokenPublicKey: 'token-signing.pub.pem',
  trustBundle: 'trust-bundle.pem',
  config: 'ca.yaml',
} as const;

const BACKDATE_MS = 60_000;

/**
 * Writes a new trust domain's CA material into `outDir`: a root (and
 * optionally an intermediate that does the signing, so the root key can go
 * offline), the ES256 token-signing key pair for `meshgate token`, the trust
 * bundle, and a ca.yaml using them with paths relative to itself.
 *
 * Nothing is written unless every file can be: without `force`, any existing
 * file stops the run before the first write. Private keys are created with
 * mode 0600 in the open() call itself (with `force`, an old file is removed
 * first, since open() applies the mode only when it creates the file).
 * Returns the paths written.
 */
export async function writeCertsInit(opts: CertsInitOptions): Promise<string[]> {
  const names = [
    CERTS_INIT_FILES.rootCert,
    CERTS_INIT_FILES.rootKey,
    ...(opts.intermediate ? [CERTS_INIT_FILES.intermediateCert, CERTS_INIT_FILES.intermediateKey] : []),
    CERTS_INIT_FILES.tokenKey,
    CERTS_INIT_FILES.tokenPublicKey,
    CERTS_INIT_FILES.trustBundle,
    CERTS_INIT_FILES.config,
  ];
  const files = names.map((name) => path.join(opts.outDir, name));
  await refuseExisting(files, opts.force);

  const now = opts.clock.now();
  const notBefore = new Date(now - BACKDATE_MS);
  const notAfter = new Date(now + opts.rootTtlMs);
  const alg = x509Algorithm(opts.keyType);

  const rootKeys = await generateKeyPair(opts.keyType);
  const rootSki = await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey);
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=meshgate root CA ${opts.trustDomain}, O=meshgate`,
    keys: rootKeys,
    notBefore,
    notAfter,
    signingAlgorithm: alg,
    extensions: [
      // pathLen 1 leaves room for exactly one intermediate; 0 when the root signs leaves itself.
      new x509.BasicConstraintsExtension(true, opts.intermediate ? 1 : 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      rootSki,
    ],
  });

  const out = new Map<string, { data: string; secret: boolean }>();
  out.set(CERTS_INIT_FILES.rootCert, { data: pem(root), secret: false });
  out.set(CERTS_INIT_FILES.rootKey, { data: await privateKeyToPem(rootKeys.privateKey), secret: true });

  if (opts.intermediate) {
    const keys = await generateKeyPair(opts.keyType);
    const cert = await x509.X509CertificateGenerator.create({
      subject: `CN=meshgate intermediate CA ${opts.trustDomain}, O=meshgate`,
      issuer: root.subjectName,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.AuthorityKeyIdentifierExtension(rootSki.keyId, false),
      ],
    });
    out.set(CERTS_INIT_FILES.intermediateCert, { data: pem(cert), secret: false });
    out.set(CERTS_INIT_FILES.intermediateKey, { data: await privateKeyToPem(keys.privateKey), secret: true });
  }

  const tokenKeys = await generateKeyPair('ecdsa-p256');
  out.set(CERTS_INIT_FILES.tokenKey, { data: await privateKeyToPem(tokenKeys.privateKey), secret: true });
  out.set(CERTS_INIT_FILES.tokenPublicKey, { data: await publicKeyToPem(tokenKeys.publicKey), secret: false });
  out.set(CERTS_INIT_FILES.trustBundle, { data: pem(root), secret: false });
  out.set(CERTS_INIT_FILES.config, { data: caYaml(opts), secret: false });

  await mkdir(opts.outDir, { recursive: true, mode: 0o700 });
  for (const [name, { data, secret }] of out) {
    await writeMaterial(path.join(opts.outDir, name), data, secret, opts.force);
  }
  return files;
}

function x509Algorithm(type: KeyType): webcrypto.EcdsaParams | webcrypto.RsaHashedImportParams {
  return type === 'ecdsa-p256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

function pem(cert: x509.X509Certificate): string {
  return `${cert.toString('pem')}\n`;
}

async function publicKeyToPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('spki', key));
  return `-----BEGIN PUBLIC KEY-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END PUBLIC KEY-----\n`;
}

function caYaml(opts: CertsInitOptions): string {
  const signer = opts.intermediate ? 'intermediate-ca' : 'root-ca';
  return `# meshgate CA configuration, written by \`meshgate certs init\`.
# Run: meshgate ca --config ${path.join(opts.outDir, CERTS_INIT_FILES.config)}
# Relative paths below resolve against this file's folder.
trustDomain: ${opts.trustDomain}
listen: { address: 0.0.0.0, port: 15012 }
admin: { address: 127.0.0.1, port: 15013 }
signing:
  certFile: ${signer}.pem
  keyFile: ${signer}.key
  chainFiles: []
trustBundle:
  # During a root rotation, list the old and the new root here (or in trust-bundle.pem).
  files: [${CERTS_INIT_FILES.trustBundle}]
serving:
  dnsNames: [localhost, meshgate-ca]
  ipAddresses: ["127.0.0.1", "::1"]
tokens:
  # Tokens minted by \`meshgate token\`. For Kubernetes projected service-account
  # tokens, add the cluster's issuer and use its jwksFile or jwksUri instead.
  issuers: [meshgate]
  audiences: [meshgate-ca]
  publicKeyFile: ${CERTS_INIT_FILES.tokenPublicKey}
  algorithms: [ES256]
  clockSkew: 30s
leaf:
  ttl: 24h
  maxTtl: 48h
  keyTypes: [ecdsa-p256, rsa-2048]
rateLimit:
  perIdentity: { requests: 20, window: 1m }
# audit:
#   file: /var/log/meshgate/ca-audit.jsonl
log:
  level: info
`;
}
