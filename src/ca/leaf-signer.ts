import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import type { LeafKeyType } from '../config/ca-schema.ts';
import type { Clock } from '../core/clock.ts';
import { x509 } from '../identity/x509.ts';
import type { CaMaterial } from './ca-material.ts';

interface LeafRequest {
  /** From the CSR: the only thing taken from it. */
  readonly publicKey: x509.PublicKey;
  readonly keyType: LeafKeyType;
  /** From the caller's proof (token or current certificate), never from the CSR. */
  readonly spiffeId: string;
  readonly ttlMs: number;
  /** Only for the CA's own serving certificate. */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

export interface IssuedLeaf {
  readonly pem: string;
  /** Upper-case hex, as node:crypto's X509Certificate#serialNumber prints it. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface LeafSigner {
  sign(request: LeafRequest): Promise<IssuedLeaf>;
}

export interface LeafSignerDeps {
  readonly clock: Clock;
  /** Serial numbers: a CSPRNG, injectable only so tests can pin it. */
  readonly randomBytes?: (size: number) => Buffer;
}

/** Backdating covers peers whose clocks run a little behind the CA's. */
const BACKDATE_MS = 60_000;

/**
 * Signs X.509-SVID leaf certificates with @peculiar/x509 over WebCrypto (ECDSA
 * P-256 and RSA alike). Invariants of every certificate it makes: empty
 * subject, exactly one URI SAN (the SPIFFE ID) in a critical SAN extension
 * (RFC 5280 requires critical when the subject is empty), CA:FALSE, EKU
 * serverAuth + clientAuth, a 16-byte positive random serial, and notAfter
 * never beyond the issuing chain.
 */
export async function createLeafSigner(material: CaMaterial, deps: LeafSignerDeps): Promise<LeafSigner> {
  const random = deps.randomBytes ?? cryptoRandomBytes;
  const issuerSki = material.signingCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  // The AKI must equal the issuer's SKI byte for byte, or chain builders that match on it fail.
  const aki = issuerSki ? new x509.AuthorityKeyIdentifierExtension(issuerSki, false) : await x509.AuthorityKeyIdentifierExtension.create(material.signingCert.publicKey, false);
  const basicConstraints = new x509.BasicConstraintsExtension(false, undefined, true);
  const eku = new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false);
  const keyUsage = {
    'ecdsa-p256': new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    'rsa-2048': new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
  } as const;

  return {
    async sign(request) {
      const now = deps.clock.now();
      const notBefore = new Date(Math.floor((now - BACKDATE_MS) / 1000) * 1000);
      const wanted = Math.floor((now + request.ttlMs) / 1000) * 1000;
      const notAfter = new Date(Math.min(wanted, material.chainNotAfter.getTime()));
      const serialBytes = random(16);
      // Positive and exactly 16 bytes in DER: top bit clear, first byte never zero.
      serialBytes[0] = (serialBytes[0]! & 0x7f) | 0x01;
      const names: x509.JsonGeneralName[] = [{ type: 'url', value: request.spiffeId }];
      for (const dns of request.dnsNames ?? []) names.push({ type: 'dns', value: dns });
      for (const ip of request.ipAddresses ?? []) names.push({ type: 'ip', value: ip });
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serialBytes.toString('hex'),
        issuer: material.signingCert.subjectName,
        notBefore,
        notAfter,
        publicKey: request.publicKey,
        signingKey: material.signingKey,
        signingAlgorithm: material.signingAlgorithm,
        extensions: [
          basicConstraints,
          keyUsage[request.keyType],
          eku,
          new x509.SubjectAlternativeNameExtension(names, true),
          aki,
          await x509.SubjectKeyIdentifierExtension.create(request.publicKey, false),
        ],
      });
      return { pem: `${cert.toString('pem')}\n`, serial: serialBytes.toString('hex').toUpperCase(), notBefore, notAfter };
    },
  };
}
