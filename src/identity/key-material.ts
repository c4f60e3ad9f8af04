import { KeyObject, sign, webcrypto, X509Certificate } from 'node:crypto';

/*
 * What a workload needs to get and read its certificate, on node:crypto
 * alone: a key pair, its PEM, a certificate signing request, and the facts of
 * the certificate it gets back. The CA side (signing certificates, reading
 * CSRs) uses @peculiar/x509 (./x509.ts); a sidecar does not load it.
 *
 * Why the CSR is encoded here rather than by @peculiar/x509: every sidecar
 * builds exactly one shape of request (subject O=meshgate, its public key, no
 * attributes), and loading @peculiar/x509 for it costs every pod ~6 MiB of
 * heap and tens of milliseconds of start-up (it resolves its ASN.1 codecs
 * through tsyringe and reflect-metadata). The request is a handful of fixed
 * DER structures around the SubjectPublicKeyInfo that WebCrypto exports and
 * a signature node:crypto makes; the CA parses and verifies it with
 * @peculiar/x509, and test/unit/identity/csr.test.ts checks it with OpenSSL too.
 */

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type KeyType = 'ecdsa-p256' | 'rsa-2048';

function algorithmOf(type: KeyType): (webcrypto.EcKeyGenParams & webcrypto.EcdsaParams) | webcrypto.RsaHashedKeyGenParams {
  return type === 'ecdsa-p256'
    ? { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
    : { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
}

export async function generateKeyPair(type: KeyType): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(algorithmOf(type), true, ['sign', 'verify'])) as CryptoKeyPair;
}

export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END PRIVATE KEY-----\n`;
}

/** One DER element: tag, definite length, contents. */
function der(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  const length = body.length;
  let head: Buffer;
  if (length < 0x80) head = Buffer.from([tag, length]);
  else if (length < 0x100) head = Buffer.from([tag, 0x81, length]);
  else if (length < 0x10000) head = Buffer.from([tag, 0x82, length >> 8, length & 0xff]);
  else throw new RangeError('DER element too long for a CSR');
  return Buffer.concat([head, body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
const BIT_STRING = 0x03;
const UTF8_STRING = 0x0c;
/** version INTEGER 0 (PKCS #10 v1). */
const VERSION_0 = Buffer.from('020100', 'hex');
/** OID 2.5.4.10, organizationName. */
const OID_ORGANIZATION = Buffer.from('060355040a', 'hex');
/** attributes [0] IMPLICIT SET OF Attribute: none. */
const NO_ATTRIBUTES = Buffer.from('a000', 'hex');
/** AlgorithmIdentifier ecdsa-with-SHA256 (1.2.840.10045.4.3.2), no parameters (RFC 5758). */
const ECDSA_WITH_SHA256 = Buffer.from('300a06082a8648ce3d040302', 'hex');
/** AlgorithmIdentifier sha256WithRSAEncryption (1.2.840.113549.1.1.11), NULL parameters (RFC 4055). */
const SHA256_WITH_RSA = Buffer.from('300d06092a864886f70d01010b0500', 'hex');

/** A CSR carrying only the public key: the CA decides the identity, not the request. PEM. */
export async function createCsr(keys: CryptoKeyPair, type: KeyType): Promise<string> {
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  const subject = der(SEQUENCE, der(SET, der(SEQUENCE, OID_ORGANIZATION, der(UTF8_STRING, Buffer.from('meshgate', 'utf8')))));
  const info = der(SEQUENCE, VERSION_0, subject, spki, NO_ATTRIBUTES);
  const privateKey = KeyObject.from(keys.privateKey);
  // ECDSA: the DER Ecdsa-Sig-Value X.509 expects (WebCrypto would give r || s); RSA: PKCS #1 v1.5.
  const signature = sign('sha256', info, type === 'ecdsa-p256' ? { key: privateKey, dsaEncoding: 'der' } : privateKey);
  const request = der(SEQUENCE, info, type === 'ecdsa-p256' ? ECDSA_WITH_SHA256 : SHA256_WITH_RSA, der(BIT_STRING, Buffer.from([0]), signature));
  return `-----BEGIN CERTIFICATE REQUEST-----\n${request
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

export interface CertificateFacts {
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spiffeId: string | undefined;
  readonly fingerprint256: string;
}

export function certificateFacts(pem: string): CertificateFacts {
  const cert = new X509Certificate(pem);
  const uris = (cert.subjectAltName ?? '').split(', ').filter((p) => p.startsWith('URI:spiffe://'));
  return {
    serial: cert.serialNumber,
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    spiffeId: uris.length === 1 ? uris[0]!.slice(4) : undefined,
    fingerprint256: cert.fingerprint256,
  };
}

/** Splits a PEM bundle into its certificates. */
export function splitPemBundle(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)?.map((c) => (c.endsWith('\n') ? c : `${c}\n`)) ?? [];
}
