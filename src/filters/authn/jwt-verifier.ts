import { decodeProtectedHeader, jwtVerify } from 'jose';
import type { JWTPayload } from 'jose';
import type { Clock } from '../../core/clock.ts';
import { authnFailure } from './authn-outcome.ts';
import type { AuthnFailure, AuthnOutcome } from './authn-outcome.ts';
import type { KeySource } from './jwks-keys.ts';
import { createLruCache } from './lru-cache.ts';

/** Far larger than any real access token; bounds the work an unauthenticated caller can cause. */
export const MAX_TOKEN_BYTES = 16_384;

export interface JwtVerifierOptions {
  readonly issuer: string;
  /** Accepted `aud` values (one must be in the token); any audience when undefined. */
  readonly audiences: readonly string[] | undefined;
  /** The allow-list; asymmetric algorithms only (the policy schema refuses `none` and HS*). */
  readonly algorithms: readonly string[];
  readonly clockSkewMs: number;
}

export interface JwtVerifier {
  /** Never throws: a bad token is a failure value. */
  verify(token: string): Promise<AuthnOutcome>;
}

/**
 * Verifies one issuer's JWTs with jose: `alg` in the allow-list, signature by a
 * key of the rule's key set of the type `alg` needs, `iss`, `aud`, `exp`
 * (required) and `nbf` with the clock skew against the injected clock. The
 * header's `jku`, `x5u`, `jwk` and `x5c` are never read: keys come from policy.
 * A token signed with HS256 and an RSA public key as the secret is refused at
 * the allow-list, and could not find an RSA key at the key lookup either.
 */
/** Verified tokens remembered per verifier; a hit skips the signature check (about 0.3 ms for ES256). */
const VERIFIED_CACHE_SIZE = 1024;

interface VerifiedEntry {
  readonly outcome: AuthnOutcome;
  /** The key that verified the signature: a hit counts only while the key set still has it. */
  readonly key: unknown;
  readonly kid: unknown;
  readonly alg: string;
  readonly expMs: number;
  readonly nbfMs: number | undefined;
}

export function createJwtVerifier(opts: JwtVerifierOptions, keys: KeySource, clock: Clock): JwtVerifier {
  const algorithms = new Set(opts.algorithms);
  const clockTolerance = Math.ceil(opts.clockSkewMs / 1000);
  const audience = opts.audiences && opts.audiences.length > 0 ? [...opts.audiences] : undefined;
  const verified = createLruCache<VerifiedEntry>(VERIFIED_CACHE_SIZE);
  return {
    async verify(token) {
      const hit = verified.get(token);
      if (hit) {
        // Same bytes, same verdict, as long as the time window holds and the key was not rotated out.
        const now = clock.now();
        const inWindow = now < hit.expMs + opts.clockSkewMs && (hit.nbfMs === undefined || now >= hit.nbfMs - opts.clockSkewMs);
        const candidates = inWindow ? await keys.lookup(hit.kid as string | undefined, hit.alg) : 'unavailable';
        if (candidates !== 'unavailable' && candidates.some((c) => c.key === hit.key)) return hit.outcome;
        verified.delete(token);
      }
      return verifyFully(token);
    },
  };

  async function verifyFully(token: string): Promise<AuthnOutcome> {
    {
      if (token.length > MAX_TOKEN_BYTES) return authnFailure('authn.jwt_invalid', `token longer than ${MAX_TOKEN_BYTES} bytes`);
      if (!isCanonicalCompactJws(token)) return authnFailure('authn.jwt_invalid', 'token is not a JWT (compact JWS)');
      let header: { alg?: unknown; kid?: unknown };
      try {
        header = decodeProtectedHeader(token);
      } catch {
        return authnFailure('authn.jwt_invalid', 'token is not a JWT (compact JWS)');
      }
      const alg = header.alg;
      // Checked here as well as by jose so the refusal names the algorithm (it is not secret).
      if (typeof alg !== 'string' || !algorithms.has(alg)) {
        return authnFailure('authn.jwt_algorithm', `token algorithm ${JSON.stringify(alg ?? null).slice(0, 20)} not allowed (allowed: ${[...algorithms].join(', ')})`);
      }
      if (header.kid !== undefined && typeof header.kid !== 'string') return authnFailure('authn.jwt_invalid', 'token header kid is not a string');
      const candidates = await keys.lookup(header.kid, alg);
      if (candidates === 'unavailable') return authnFailure('authn.jwks_unavailable', 'signing keys of the token issuer are unavailable');
      if (candidates.length === 0) {
        return authnFailure('authn.jwt_invalid', header.kid === undefined ? `no ${alg} key in the issuer key set` : 'no key with the token kid in the issuer key set');
      }
      let last: AuthnFailure | undefined;
      for (const candidate of candidates) {
        try {
          const { payload } = await jwtVerify(token, candidate.key, {
            algorithms: [alg],
            issuer: opts.issuer,
            ...(audience ? { audience } : {}),
            requiredClaims: ['exp'],
            clockTolerance,
            currentDate: new Date(clock.now()),
          });
          const outcome = success(token, payload, opts.issuer);
          verified.set(token, {
            outcome,
            key: candidate.key,
            kid: header.kid,
            alg,
            expMs: (payload.exp as number) * 1000,
            nbfMs: typeof payload.nbf === 'number' ? payload.nbf * 1000 : undefined,
          });
          return outcome;
        } catch (err) {
          last = failureOf(err);
          // Claims are checked after the signature: a claim failure means this key verified, so it is final.
          if (last.reason !== BAD_SIGNATURE) return last;
        }
      }
      return last!;
    }
  }
}

/** RFC 7515 §7.1: three base64url segments (no padding) joined by dots; the signature is empty only for alg none. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * One spelling per token. Node's base64 decoder skips characters outside the
 * alphabet and ignores the unused low bits of the last character, so without
 * this `a.b.c`, `a.b. c` and `a.b.d` (c and d differing only in those bits)
 * would all verify as one token: a blocklist or log keyed by the token text
 * would see three different ones.
 */
function isCanonicalCompactJws(token: string): boolean {
  if (!COMPACT_JWS.test(token)) return false;
  return token.split('.').every((segment) => Buffer.from(segment, 'base64url').toString('base64url') === segment);
}

const BAD_SIGNATURE = 'token signature does not verify with a key of the issuer';

function success(token: string, payload: JWTPayload, issuer: string): AuthnOutcome {
  const subject = typeof payload.sub === 'string' ? payload.sub : '';
  return {
    ok: true,
    auth: { principal: `${issuer}/${subject}`, issuer, subject, claims: Object.freeze({ ...payload }) },
    // The payload segment is already base64url JSON of exactly the verified claims (Istio's outputPayloadToHeader).
    claimsHeader: token.slice(token.indexOf('.') + 1, token.lastIndexOf('.')),
  };
}

function failureOf(err: unknown): AuthnFailure {
  const e = err as { code?: string; claim?: string; reason?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return authnFailure('authn.jwt_expired', 'token expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return authnFailure('authn.jwt_invalid', `token lacks the "${e.claim}" claim`);
      if (e.claim === 'iss') return authnFailure('authn.jwt_issuer', 'token issuer not accepted');
      if (e.claim === 'aud') return authnFailure('authn.jwt_audience', 'token audience not accepted');
      if (e.claim === 'nbf' || e.claim === 'iat') return authnFailure('authn.jwt_not_yet_valid', `token not valid yet ("${e.claim}" is in the future)`);
      return authnFailure('authn.jwt_invalid', `token claim "${e.claim}" is invalid`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return authnFailure('authn.jwt_algorithm', 'token algorithm not allowed');
    case 'ERR_JOSE_NOT_SUPPORTED':
      return authnFailure('authn.jwt_invalid', 'token uses an unsupported JOSE feature (e.g. an unknown crit header)');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return authnFailure('authn.jwt_invalid', 'token is not a valid JWT');
    default:
      // Signature mismatch, and jose's TypeError for a key that does not fit the algorithm.
      return authnFailure('authn.jwt_invalid', BAD_SIGNATURE);
  }
}
