import type { JsonWebKey, KeyObject } from 'node:crypto';
import { createPublicKey } from 'node:crypto';

/** One public verification key of a key set. */
export interface VerificationKey {
  readonly kid: string | undefined;
  readonly kty: 'RSA' | 'EC' | 'OKP';
  readonly crv: string | undefined;
  /** The key's own `alg`, when the set pins one. */
  readonly alg: string | undefined;
  readonly key: KeyObject;
}

/** Where a JWT rule's keys come from: an inline set, or a fetched and cached JWKS. */
export interface KeySource {
  /**
   * The keys that may have signed a token with this header. `unavailable`
   * when no key set could ever be loaded (fail closed: 503); an empty list
   * when the set is known and no key fits (401).
   */
  lookup(kid: string | undefined, alg: string): Promise<readonly VerificationKey[] | 'unavailable'>;
}

const ALG_KEY: Readonly<Record<string, { kty: VerificationKey['kty']; crv?: readonly string[] }>> = {
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: ['P-256'] },
  ES384: { kty: 'EC', crv: ['P-384'] },
  ES512: { kty: 'EC', crv: ['P-521'] },
  EdDSA: { kty: 'OKP', crv: ['Ed25519', 'Ed448'] },
};

/**
 * Reads a JWKS document into public keys. Only asymmetric signing keys are
 * kept: `oct` keys (which would turn a public key set into an HMAC secret),
 * encryption keys (`use: enc`) and keys Node cannot load are skipped. Returns
 * a problem (a string) when the document holds no usable key, so a bad
 * refresh never replaces a good set.
 */
export function parseJwks(document: unknown): readonly VerificationKey[] | string {
  if (typeof document !== 'object' || document === null || !Array.isArray((document as { keys?: unknown }).keys)) return 'not a JWKS (expected {"keys": [...]})';
  const keys: VerificationKey[] = [];
  for (const raw of (document as { keys: unknown[] }).keys) {
    if (typeof raw !== 'object' || raw === null) continue;
    const jwk = raw as Record<string, unknown>;
    if (jwk.kty !== 'RSA' && jwk.kty !== 'EC' && jwk.kty !== 'OKP') continue;
    if (jwk.use !== undefined && jwk.use !== 'sig') continue;
    let key: KeyObject;
    try {
      // Only the public members: a set that leaks private material still yields just the public key.
      key = createPublicKey({ key: publicMembers(jwk), format: 'jwk' });
    } catch {
      continue;
    }
    keys.push({
      kid: typeof jwk.kid === 'string' ? jwk.kid : undefined,
      kty: jwk.kty,
      crv: typeof jwk.crv === 'string' ? jwk.crv : undefined,
      alg: typeof jwk.alg === 'string' ? jwk.alg : undefined,
      key,
    });
  }
  return keys.length > 0 ? keys : 'no usable public signing key (RSA, EC or OKP)';
}

function publicMembers(jwk: Record<string, unknown>): JsonWebKey {
  const { kty, crv, n, e, x, y } = jwk;
  return Object.fromEntries(Object.entries({ kty, crv, n, e, x, y }).filter(([, v]) => v !== undefined)) as JsonWebKey;
}

/**
 * Keys that may verify a token signed with `alg`: of the key type `alg`
 * needs (so an RSA key is never offered to an EC or HMAC verifier), with the
 * token's `kid` when it names one.
 */
export function keysFor(keys: readonly VerificationKey[], kid: string | undefined, alg: string): VerificationKey[] {
  const wanted = ALG_KEY[alg];
  if (!wanted) return [];
  return keys.filter(
    (k) => k.kty === wanted.kty && (wanted.crv === undefined || (k.crv !== undefined && wanted.crv.includes(k.crv))) && (k.alg === undefined || k.alg === alg) && (kid === undefined || k.kid === kid),
  );
}

/** A rule's inline `jwks`: parsed once per snapshot, never fetched. */
export function createInlineKeySource(document: unknown): KeySource {
  const parsed = parseJwks(document);
  const keys = typeof parsed === 'string' ? [] : parsed;
  return { lookup: async (kid, alg) => keysFor(keys, kid, alg) };
}
