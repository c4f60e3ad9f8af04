import { createPublicKey } from 'node:crypto';
import type { LeafKeyType } from '../config/ca-schema.ts';
import { x509 } from '../identity/x509.ts';
import type { CaRefusal } from './ca-reasons.ts';
import { refuse } from './ca-reasons.ts';

export interface CheckedCsr {
  readonly ok: true;
  readonly keyType: LeafKeyType;
  /** The request's SubjectPublicKeyInfo: the only part of a CSR the CA uses. */
  readonly publicKey: x509.PublicKey;
}

/** A few KiB in practice; bounds parsing work for a caller that already passed authentication. */
const MAX_CSR_BYTES = 16_384;
const MAX_RSA_BITS = 8192;

/**
 * Checks a PEM PKCS#10 CSR: it parses, its signature verifies with its own
 * key (proof of possession), and its key is EC P-256 or RSA of 2048 to 8192
 * bits and of an allowed type. Subject, SANs and extensions the request asks
 * for are ignored, never copied: the identity comes from the caller's proof.
 */
export async function checkCsr(pem: string, allowed: readonly LeafKeyType[]): Promise<CheckedCsr | CaRefusal> {
  if (pem.length > MAX_CSR_BYTES) return refuse('ca.csr_malformed', `CSR longer than ${MAX_CSR_BYTES} bytes`);
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(pem)) return refuse('ca.csr_malformed', 'CSR is not a PEM "CERTIFICATE REQUEST"');
  let csr: x509.Pkcs10CertificateRequest;
  let keyType: LeafKeyType | string;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
    keyType = describeKey(csr.publicKey.rawData);
  } catch {
    return refuse('ca.csr_malformed', 'CSR does not parse as PKCS#10');
  }
  if (keyType !== 'ecdsa-p256' && keyType !== 'rsa-2048') {
    return refuse('ca.csr_key_type', `CSR key type ${keyType} not accepted (EC P-256 or RSA 2048-${MAX_RSA_BITS} bits)`);
  }
  if (!allowed.includes(keyType)) return refuse('ca.csr_key_type', `CSR key type ${keyType} not allowed here (allowed: ${allowed.join(', ')})`);
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) return refuse('ca.csr_signature', 'CSR signature does not verify with its public key');
  return { ok: true, keyType, publicKey: csr.publicKey };
}

/** `ecdsa-p256` or `rsa-2048` (any size in range), else a description for the refusal. */
function describeKey(spki: ArrayBuffer): LeafKeyType | string {
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') return details.namedCurve === 'prime256v1' ? 'ecdsa-p256' : `EC ${details.namedCurve ?? 'unknown curve'}`;
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    return bits >= 2048 && bits <= MAX_RSA_BITS ? 'rsa-2048' : `RSA ${bits}`;
  }
  return String(key.asymmetricKeyType);
}
