import type { RequestAuth } from '../../core/call-context.ts';

/** The reason codes the authentication filter answers with (see src/core/reason-codes.ts). */
export type AuthnCode =
  | 'authn.missing_token'
  | 'authn.jwt_invalid'
  | 'authn.jwt_expired'
  | 'authn.jwt_not_yet_valid'
  | 'authn.jwt_audience'
  | 'authn.jwt_issuer'
  | 'authn.jwt_algorithm'
  | 'authn.jwks_unavailable'
  | 'authn.token_inactive'
  | 'authn.introspection_unavailable';

interface AuthnSuccess {
  readonly ok: true;
  readonly auth: RequestAuth;
  /** base64url JSON of the verified claims, for `forwardClaimsHeader`. */
  readonly claimsHeader: string;
}

export interface AuthnFailure {
  readonly ok: false;
  readonly code: AuthnCode;
  /** For the caller and the log: names what failed, never carries the token or a key. */
  readonly reason: string;
}

/** What verifying one credential gave: a value, never an exception (STYLE.md #5). */
export type AuthnOutcome = AuthnSuccess | AuthnFailure;

export function authnFailure(code: AuthnCode, reason: string): AuthnFailure {
  return { ok: false, code, reason };
}
