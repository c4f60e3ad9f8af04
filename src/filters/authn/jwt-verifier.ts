import type { JWTPayload } from 'jose';
import { jwtVerify } from 'jose';
import type { Clock } from '../../core/clock.ts';
import type { JwtRejection } from '../../identity/jwt-checks.ts';
import { isJwtRejection, JWT_PROBLEM_CODES, joseRejection, readJwtHeader } from '../../identity/jwt-checks.ts';
import type { AuthnFailure, AuthnOutcome } from './authn-outcome.ts';
import { authnFailure } from './authn-outcome.ts';
import type { KeySource } from './jwks-keys.ts';
import { createLruCache } from './lru-cache.ts';

export { MAX_TOKEN_BYTES } from '../../identity/jwt-checks.ts';

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
      const header = readJwtHeader(token, algorithms);
      if (isJwtRejection(header)) return failureOf(header);
      const { alg } = header;
      if (header.kid !== undefined && typeof header.kid !== 'string') return authnFailure('authn.jwt_invalid', 'token header kid is not a string');
      const candidates = await keys.lookup(header.kid, alg);
      if (candidates === 'unavailable') return authnFailure('authn.jwks_unavailable', 'signing keys of the token issuer are unavailable');
      if (candidates.length === 0) {
        return authnFailure('authn.jwt_invalid', header.kid === undefined ? `no ${alg} key in the issuer key set` : 'no key with the token kid in the issuer key set');
      }
      let last: JwtRejection | undefined;
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
          last = joseRejection(err, BAD_SIGNATURE);
          // Claims are checked after the signature: a claim failure means this key verified, so it is final.
          if (last.problem !== 'signature') return failureOf(last);
        }
      }
      return failureOf(last!);
    }
  }
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

function failureOf(rejection: JwtRejection): AuthnFailure {
  return authnFailure(JWT_PROBLEM_CODES[rejection.problem].authn, rejection.reason);
}
