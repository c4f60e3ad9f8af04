import type { KeyObject } from 'node:crypto';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { CaConfig } from '../config/ca-schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Clock } from '../core/clock.ts';
import { splitPemBundle, x509 } from '../identity/x509.ts';

/** The issuing CA and the roots, loaded and cross-checked once at start. */
export interface CaMaterial {
  readonly signingCert: x509.X509Certificate;
  /** Non-extractable: the key is used, never exported again. */
  readonly signingKey: webcrypto.CryptoKey;
  readonly signingAlgorithm: webcrypto.EcdsaParams | webcrypto.Algorithm;
  /**
   * Sent after the leaf, nearest first: the signing certificate itself when
   * it is an intermediate, then signing.chainFiles. Never a root: peers have
   * those from the trust bundle. (PEM, each ending with a newline.)
   */
  readonly chainPem: readonly string[];
  /** Every root in force. */
  readonly rootsPem: readonly string[];
  /** The earliest notAfter of the issuing CA and its intermediates: no leaf outlives its chain. */
  readonly chainNotAfter: Date;
}

export interface CaMaterialDeps {
  readonly clock: Clock;
  resolvePath(file: string): string;
  readonly configFile: string;
}

/**
 * Reads the signing certificate, key, intermediates and roots, and refuses to
 * start (ConfigError, one line) when they do not fit together: the key must
 * match the certificate, the certificate must be a CA, the chain must lead
 * to one of the roots, and nothing may be expired. Catching this at start is
 * the only way to avoid issuing certificates that no peer can verify.
 */
export async function loadCaMaterial(config: Pick<CaConfig, 'signing' | 'trustBundle'>, deps: CaMaterialDeps): Promise<CaMaterial> {
  const fail = (field: string, problem: string): never => {
    throw new ConfigError(`${deps.configFile}: ${field}: ${problem}`);
  };
  const certsIn = async (file: string, field: string): Promise<string[]> => {
    const certs = splitPemBundle(await read(file, field, deps));
    if (certs.length === 0) fail(field, `${file} holds no PEM certificate`);
    return certs;
  };

  const [signingPem, ...extra] = await certsIn(config.signing.certFile, 'signing.certFile');
  const chainPem = [...extra];
  for (const [i, file] of config.signing.chainFiles.entries()) chainPem.push(...(await certsIn(file, `signing.chainFiles[${i}]`)));
  const rootsPem: string[] = [];
  for (const [i, file] of config.trustBundle.files.entries()) {
    for (const pem of await certsIn(file, `trustBundle.files[${i}]`)) if (!rootsPem.includes(pem)) rootsPem.push(pem);
  }

  const now = new Date(deps.clock.now());
  const parse = (pem: string, field: string): X509Certificate => {
    try {
      return new X509Certificate(pem);
    } catch {
      return fail(field, 'not a valid PEM certificate');
    }
  };
  const signing = parse(signingPem!, 'signing.certFile');
  const chain = chainPem.map((pem) => parse(pem, 'signing.chainFiles'));
  const roots = rootsPem.map((pem) => parse(pem, 'trustBundle.files'));

  if (!signing.ca) fail('signing.certFile', 'not a CA certificate (basicConstraints CA:TRUE missing)');
  for (const [field, cert] of [['signing.certFile', signing], ...chain.map((c) => ['signing.chainFiles', c] as const)] as const) {
    if (new Date(cert.validTo) <= now) fail(field, `certificate ${cert.subject.replaceAll('\n', ', ')} expired at ${new Date(cert.validTo).toISOString()}`);
  }
  for (const root of roots) if (!root.ca) fail('trustBundle.files', `${root.subject.replaceAll('\n', ', ')} is not a CA certificate`);

  // Walk signing -> intermediates -> a root; each link checked by signature, not by name.
  let cursor = signing;
  for (const next of chain) {
    if (!cursor.checkIssued(next) || !cursor.verify(next.publicKey))
      fail('signing.chainFiles', `${next.subject.replaceAll('\n', ', ')} did not issue ${cursor.subject.replaceAll('\n', ', ')} (order: nearest first)`);
    cursor = next;
  }
  const anchored = roots.some((root) => root.raw.equals(cursor.raw) || (cursor.checkIssued(root) && cursor.verify(root.publicKey)));
  if (!anchored) fail('trustBundle.files', 'no root in the trust bundle issued the signing certificate (or its last intermediate)');

  const keyPem = await read(config.signing.keyFile, 'signing.keyFile', deps);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return fail('signing.keyFile', 'not a PEM private key (PKCS#8, SEC1 or PKCS#1)');
  }
  if (!signing.checkPrivateKey(key)) fail('signing.keyFile', 'does not match the public key of signing.certFile');
  const { importParams, signingAlgorithm } = algorithmsFor(key, fail);
  const signingKey = await webcrypto.subtle.importKey('pkcs8', key.export({ format: 'der', type: 'pkcs8' }), importParams, false, ['sign']);

  const chainNotAfter = [signing, ...chain].map((c) => new Date(c.validTo)).reduce((a, b) => (a < b ? a : b));
  const selfSigned = signing.checkIssued(signing) && signing.verify(signing.publicKey);
  return {
    signingCert: new x509.X509Certificate(signingPem!),
    signingKey,
    signingAlgorithm,
    chainPem: selfSigned ? chainPem : [signingPem!, ...chainPem],
    rootsPem,
    chainNotAfter,
  };
}

function algorithmsFor(
  key: KeyObject,
  fail: (field: string, problem: string) => never,
): { importParams: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams; signingAlgorithm: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { importParams: { name: 'ECDSA', namedCurve: 'P-256' }, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } };
    if (curve === 'secp384r1') return { importParams: { name: 'ECDSA', namedCurve: 'P-384' }, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } };
    return fail('signing.keyFile', `EC curve ${curve} not supported (P-256 or P-384)`);
  }
  if (key.asymmetricKeyType === 'rsa') {
    return { importParams: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' } };
  }
  return fail('signing.keyFile', `key type ${key.asymmetricKeyType} not supported (EC P-256, P-384 or RSA)`);
}

async function read(file: string, field: string, deps: CaMaterialDeps): Promise<string> {
  try {
    return await readFile(deps.resolvePath(file), 'utf8');
  } catch (err) {
    throw new ConfigError(`${deps.configFile}: ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}
