import type { Clock } from '../../core/clock.ts';
import type { AuthnOutcome } from './authn-outcome.ts';
import { authnFailure } from './authn-outcome.ts';
import type { IntrospectionClient } from './introspection-client.ts';

export interface IntrospectionCheck {
  /** Expected `iss` when the answer has one; also the principal's issuer when it has none. */
  readonly issuer: string | undefined;
  /** Accepted `aud` values, checked when the answer has an `aud`. */
  readonly audiences: readonly string[] | undefined;
  readonly clockSkewMs: number;
  /** Principal issuer of last resort: the endpoint URL. */
  readonly endpoint: string;
}

export interface IntrospectionVerifier {
  verify(token: string): Promise<AuthnOutcome>;
}

/**
 * Turns an introspection answer into a request credential. `active` must be
 * true; `exp`, `nbf`, `iss` and `aud` are checked when the answer carries them
 * (RFC 7662 makes them optional), on every call, cached answers included.
 * The principal is `iss/sub`, with `username` or `client_id` standing in for
 * a missing `sub`.
 */
export function createIntrospectionVerifier(check: IntrospectionCheck, client: IntrospectionClient, clock: Clock): IntrospectionVerifier {
  const audiences = check.audiences && check.audiences.length > 0 ? new Set(check.audiences) : undefined;
  return {
    async verify(token) {
      const answer = await client.introspect(token);
      if (answer.state === 'unavailable') return authnFailure('authn.introspection_unavailable', 'the token introspection endpoint did not answer usably');
      if (answer.state === 'inactive') return authnFailure('authn.token_inactive', 'token is not active');
      const { claims } = answer;
      const nowSeconds = clock.now() / 1000;
      const skew = check.clockSkewMs / 1000;
      if (typeof claims.exp === 'number' && claims.exp <= nowSeconds - skew) return authnFailure('authn.token_inactive', 'token expired');
      if (typeof claims.nbf === 'number' && claims.nbf > nowSeconds + skew) return authnFailure('authn.token_inactive', 'token not valid yet');
      if (claims.iss !== undefined && check.issuer !== undefined && claims.iss !== check.issuer) return authnFailure('authn.token_inactive', 'token issuer not accepted');
      if (claims.aud !== undefined && audiences) {
        const given = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
        if (!given.some((a) => typeof a === 'string' && audiences.has(a))) return authnFailure('authn.token_inactive', 'token audience not accepted');
      }
      const issuer = typeof claims.iss === 'string' ? claims.iss : (check.issuer ?? check.endpoint);
      const subject = [claims.sub, claims.username, claims.client_id].find((v): v is string => typeof v === 'string') ?? '';
      return {
        ok: true,
        auth: { principal: `${issuer}/${subject}`, issuer, subject, claims },
        claimsHeader: Buffer.from(JSON.stringify(claims)).toString('base64url'),
      };
    },
  };
}
