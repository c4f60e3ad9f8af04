import type { KeyObject } from 'node:crypto';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Clock } from '../core/clock.ts';
import { formatSpiffeId, parseSpiffeId } from '../core/spiffe-id.ts';

export interface MintTokenOptions {
  /** PEM private key: EC P-256 (ES256, what `certs init` writes) or RSA (RS256). */
  readonly keyPem: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly ttlMs: number;
  readonly issuer: string;
  readonly audience: string;
  readonly clock: Clock;
}

/** A problem with the options (bad key, names that are not DNS labels), worded for one line. */
export class MintTokenError extends Error {
  override readonly name = 'MintTokenError';
}

/**
 * Mints a bootstrap token for a host outside Kubernetes. It has the shape of
 * a Kubernetes projected service-account token (`sub:
 * system:serviceaccount:<ns>:<sa>` plus the `kubernetes.io` claim), so the CA
 * has one verification path for both.
 */
export async function mintToken(opts: MintTokenOptions): Promise<string> {
  if (!parseSpiffeId(formatSpiffeId({ trustDomain: 'x', namespace: opts.namespace, serviceAccount: opts.serviceAccount }))) {
    throw new MintTokenError('--ns and --sa must be DNS labels: lower-case letters, digits and dashes');
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(opts.keyPem);
  } catch {
    throw new MintTokenError('not a PEM private key');
  }
  let alg: string;
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') alg = 'ES256';
  else if (key.asymmetricKeyType === 'rsa') alg = 'RS256';
  else throw new MintTokenError(`key type ${key.asymmetricKeyType} not supported (EC P-256 or RSA)`);
  const now = Math.floor(opts.clock.now() / 1000);
  return new SignJWT({ 'kubernetes.io': { namespace: opts.namespace, serviceaccount: { name: opts.serviceAccount } } })
    .setProtectedHeader({ alg, typ: 'JWT' })
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setSubject(`system:serviceaccount:${opts.namespace}:${opts.serviceAccount}`)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + Math.max(1, Math.floor(opts.ttlMs / 1000)))
    .setJti(randomUUID())
    .sign(key);
}
