import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import type { Clock } from '../core/clock.ts';
import type { ReasonCode } from '../core/reason-codes.ts';

/*
 * What the three JWT verifiers (bootstrap tokens at the CA, admin-API tokens
 * at the policy server, request tokens in the authn filter) share: the checks
 * before jose runs, one reading of jose's errors, and one table from the
 * problem found to each verifier's own reason code. The wording a caller sees
 * is the same.
 */

/** Far larger than any real token; bounds the work an unauthenticated caller can cause. */
export const MAX_TOKEN_BYTES = 16_384;

export type JwtProblem = 'malformed' | 'algorithm' | 'unsupported' | 'expired' | 'not_yet_valid' | 'issuer' | 'audience' | 'missing_claim' | 'invalid_claim' | 'signature' | 'keys_unavailable';

/**
 * The reason code of each problem at the CA (bootstrap tokens) and in the
 * authn filter (request tokens), side by side so a problem is never mapped for
 * one and forgotten for the other. Admin-API tokens answer every problem with
 * admin.unauthenticated and the rejection's reason.
 */
export const JWT_PROBLEM_CODES = {
  malformed: { ca: 'ca.token_malformed', authn: 'authn.jwt_invalid' },
  algorithm: { ca: 'ca.token_algorithm', authn: 'authn.jwt_algorithm' },
  unsupported: { ca: 'ca.token_algorithm', authn: 'authn.jwt_invalid' },
  expired: { ca: 'ca.token_expired', authn: 'authn.jwt_expired' },
  not_yet_valid: { ca: 'ca.token_not_yet_valid', authn: 'authn.jwt_not_yet_valid' },
  issuer: { ca: 'ca.token_issuer', authn: 'authn.jwt_issuer' },
  audience: { ca: 'ca.token_audience', authn: 'authn.jwt_audience' },
  missing_claim: { ca: 'ca.token_claims', authn: 'authn.jwt_invalid' },
  invalid_claim: { ca: 'ca.token_claims', authn: 'authn.jwt_invalid' },
  signature: { ca: 'ca.token_signature', authn: 'authn.jwt_invalid' },
  keys_unavailable: { ca: 'ca.token_keys_unavailable', authn: 'authn.jwks_unavailable' },
} as const satisfies Record<JwtProblem, { readonly ca: ReasonCode<'ca'>; readonly authn: ReasonCode<'data'> }>;

export interface JwtRejection {
  readonly problem: JwtProblem;
  /** For the caller and the log: never the token, never key material. */
  readonly reason: string;
}

export interface JwtHeader {
  readonly alg: string;
  readonly kid: unknown;
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

/** Size, compact form and `alg` in the allow-list, before any key is looked up. */
export function readJwtHeader(token: string, algorithms: ReadonlySet<string>): JwtHeader | JwtRejection {
  if (token.length > MAX_TOKEN_BYTES) return { problem: 'malformed', reason: `token longer than ${MAX_TOKEN_BYTES} bytes` };
  if (!isCanonicalCompactJws(token)) return { problem: 'malformed', reason: 'token is not a JWT (compact JWS)' };
  let header: { alg?: unknown; kid?: unknown };
  try {
    header = decodeProtectedHeader(token);
  } catch {
    return { problem: 'malformed', reason: 'token is not a JWT (compact JWS)' };
  }
  // Checked here as well as by jose so the refusal names the algorithm (it is not secret).
  if (typeof header.alg !== 'string' || !algorithms.has(header.alg)) {
    return { problem: 'algorithm', reason: `token algorithm ${JSON.stringify(header.alg ?? null).slice(0, 20)} not allowed (allowed: ${[...algorithms].join(', ')})` };
  }
  return { alg: header.alg, kid: header.kid };
}

export function isJwtRejection(value: JwtHeader | JwtRejection): value is JwtRejection {
  return 'problem' in value;
}

/** A JWKS that could not be fetched: a network error, a non-200 answer (a 401 for a bad bearer token), not JSON, or a TLS failure. */
const KEYS_UNREACHABLE = /fetch|ECONN|ENOTFOUND|network|Expected 200 OK|JSON Web Key Set HTTP response|certificate/i;

/** What an error thrown by jose's jwtVerify means; `signatureReason` names whose keys were tried. */
export function joseRejection(err: unknown, signatureReason: string): JwtRejection {
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return { problem: 'expired', reason: 'token expired' };
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return { problem: 'missing_claim', reason: `token lacks the "${e.claim}" claim` };
      if (e.claim === 'iss') return { problem: 'issuer', reason: 'token issuer not accepted' };
      if (e.claim === 'aud') return { problem: 'audience', reason: 'token audience not accepted' };
      if (e.claim === 'nbf' || e.claim === 'iat') return { problem: 'not_yet_valid', reason: `token not valid yet ("${e.claim}" is in the future)` };
      return { problem: 'invalid_claim', reason: `token claim "${e.claim}" is invalid` };
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return { problem: 'algorithm', reason: 'token algorithm not allowed' };
    case 'ERR_JOSE_NOT_SUPPORTED':
      return { problem: 'unsupported', reason: 'token uses an unsupported JOSE feature (e.g. an unknown crit header)' };
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return { problem: 'keys_unavailable', reason: 'token signing keys unavailable (JWKS)' };
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return { problem: 'malformed', reason: 'token is not a valid JWT' };
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return { problem: 'signature', reason: signatureReason };
    default:
      if (e.message && KEYS_UNREACHABLE.test(e.message)) return { problem: 'keys_unavailable', reason: 'token signing keys unavailable (JWKS)' };
      // jose raises a plain TypeError for a key that does not fit the algorithm.
      return { problem: 'signature', reason: signatureReason };
  }
}

/** What a token checked against configured keys must carry: the CA's bootstrap tokens and admin-API tokens. */
export interface ConfiguredJwtRules {
  readonly algorithms: readonly string[];
  readonly issuers: readonly string[];
  readonly audiences: readonly string[];
  readonly clockSkewMs: number;
}

/**
 * A check of tokens against configured keys: the header checks above, then
 * jose (signature by a key of `getKey`, `iss`, `aud` and `exp` required, `nbf`)
 * at the injected clock's time with the configured skew. Never throws.
 */
export function createConfiguredJwtCheck(rules: ConfiguredJwtRules, getKey: JWTVerifyGetKey, clock: Clock): (token: string) => Promise<{ readonly payload: JWTPayload } | JwtRejection> {
  const algorithms = [...rules.algorithms];
  const allowed: ReadonlySet<string> = new Set(algorithms);
  const clockTolerance = Math.ceil(rules.clockSkewMs / 1000);
  return async (token) => {
    const header = readJwtHeader(token, allowed);
    if (isJwtRejection(header)) return header;
    try {
      const { payload } = await jwtVerify(token, getKey, {
        algorithms,
        issuer: [...rules.issuers],
        audience: [...rules.audiences],
        requiredClaims: ['exp', 'iss', 'aud'],
        clockTolerance,
        currentDate: new Date(clock.now()),
      });
      return { payload };
    } catch (err) {
      return joseRejection(err, 'token signature does not verify with a configured key');
    }
  };
}
