import type { RequestAuth } from '../../core/call-context.ts';
import type { ReasonCode } from '../../core/reason-codes.ts';

/** The reason codes the authentication filter answers with: the `authn.` codes of src/core/reason-codes.ts. */
export type AuthnCode = Extract<ReasonCode<'data'>, `authn.${string}`>;

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
