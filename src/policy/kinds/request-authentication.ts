import { createPublicKey } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';
import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { documentSchema, duration, headerName, mode, refineUniqueNames, ruleName, schemaParts } from './common.ts';

/*
 * RequestAuthentication, modelled on Istio's: per-workload JWT rules. Only
 * asymmetric algorithms are accepted (never `none`, never HS*): a verifier
 * that holds a public key must not be talked into using it as an HMAC secret.
 * Inline keys must be public keys for the same reason, and must fit at least
 * one allowed algorithm.
 */

export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** The header tokens are read from when a rule names no location. */
export const DEFAULT_TOKEN_HEADER = Object.freeze({ name: 'authorization', prefix: 'Bearer ' });

const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

const algorithm = z.enum(JWT_ALGORITHMS, {
  error: (issue) => {
    const input = issue.input;
    if (input === 'none') return '"none" is never accepted: tokens must be signed';
    if (typeof input === 'string' && /^HS\d+$/.test(input)) return `${input} is not accepted: symmetric algorithms invite key-type confusion; use ${JWT_ALGORITHMS.join(', ')}`;
    return `expected one of ${JWT_ALGORITHMS.join(', ')}`;
  },
});

/** Which algorithms a public JWK can verify. */
function algorithmsOfKey(jwk: Record<string, unknown>): readonly JwtAlgorithm[] {
  if (jwk.kty === 'RSA') return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
  if (jwk.kty === 'EC') return jwk.crv === 'P-256' ? ['ES256'] : jwk.crv === 'P-384' ? ['ES384'] : jwk.crv === 'P-521' ? ['ES512'] : [];
  if (jwk.kty === 'OKP') return jwk.crv === 'Ed25519' || jwk.crv === 'Ed448' ? ['EdDSA'] : [];
  return [];
}

const jwk = z
  .looseObject({
    kty: z.string().describe('Key type: RSA, EC or OKP.'),
    kid: z.string().max(256).optional().describe('Key id matched against the token header.'),
  })
  // Key problems abort (continue: false): "no key fits" on top of "this key is private" would only confuse.
  .superRefine((key, ctx) => {
    if (key.kty === 'oct') {
      ctx.addIssue({ code: 'custom', path: ['kty'], message: 'symmetric keys (kty oct) are not accepted: JWT rules verify with public keys only', continue: false });
      return;
    }
    if (!['RSA', 'EC', 'OKP'].includes(key.kty)) {
      ctx.addIssue({ code: 'custom', path: ['kty'], message: `expected RSA, EC or OKP, got ${JSON.stringify(key.kty)}`, continue: false });
      return;
    }
    const secret = PRIVATE_JWK_MEMBERS.find((m) => m in key);
    if (secret) {
      ctx.addIssue({ code: 'custom', path: [secret], message: 'private key material: inline JWKS must hold public keys only', continue: false });
      return;
    }
    try {
      createPublicKey({ key: key as JsonWebKey, format: 'jwk' });
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `not a usable public key (${(err as Error).message})`, continue: false });
    }
  });

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

const jwksUri = z
  .string()
  .max(2048)
  .refine((text) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      return false;
    }
    return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
  }, 'expected an https URL (plain http only for localhost)');

export function requestAuthenticationSpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const tokenName = z
    .string()
    .min(1)
    .max(256)
    .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a cookie or query parameter name');

  const jwtRule = z
    .strictObject({
      name: ruleName.describe('Rule name in decision ids and metrics.'),
      issuer: z.string().min(1).max(limits.maxPatternLength).describe('Expected `iss` claim; selects the rule for a token.'),
      jwksUri: jwksUri.optional().describe('Where the key set is fetched (https); cached, refreshed, kept when a refresh fails.'),
      jwks: z
        .strictObject({ keys: p.list(jwk).min(1).describe('Public keys (RSA, EC, OKP).') })
        .optional()
        .describe('Inline key set, instead of jwksUri.'),
      audiences: p.list(z.string().min(1).max(limits.maxPatternLength)).optional().describe('Accepted `aud` values; one must be in the token. Any audience when omitted.'),
      algorithms: p.list(algorithm).min(1).default(['RS256', 'ES256']).describe('Allowed `alg` values (asymmetric only; never none or HS*).'),
      clockSkew: duration.refine((ms) => ms <= 300_000, 'must be at most 5m').default(30_000).describe('Leeway for exp and nbf.'),
      fromHeaders: p
        .list(
          z.strictObject({
            name: headerName.describe('Header name.'),
            prefix: z.string().max(64).optional().describe('Text before the token, e.g. "Bearer ".'),
          }),
        )
        .optional()
        .describe('Headers the token is read from. When no location is given: authorization with prefix "Bearer ".'),
      fromCookies: p.list(tokenName).optional().describe('Cookies the token is read from.'),
      fromParams: p.list(tokenName).optional().describe('Query parameters the token is read from (they show up in logs: prefer headers).'),
      forwardClaimsHeader: headerName.optional().describe('Header that carries the verified claims (base64url JSON) to the app.'),
      forwardOriginalToken: z.boolean().default(false).describe('Keep the token in the request to the app; by default it is stripped.'),
    })
    .superRefine((rule, ctx) => {
      if ((rule.jwksUri === undefined) === (rule.jwks === undefined)) {
        ctx.addIssue({ code: 'custom', message: 'expected exactly one of jwksUri, jwks' });
      }
      if (rule.jwks) {
        const usable = rule.jwks.keys.some((key) => algorithmsOfKey(key).some((alg) => rule.algorithms.includes(alg)));
        if (!usable) ctx.addIssue({ code: 'custom', path: ['jwks', 'keys'], message: `no key fits algorithms ${rule.algorithms.join(', ')}` });
      }
    })
    .transform((rule) =>
      rule.fromHeaders === undefined && rule.fromCookies === undefined && rule.fromParams === undefined ? { ...rule, fromHeaders: [{ ...DEFAULT_TOKEN_HEADER }] } : rule,
    );

  return z
    .strictObject({
      selector: p.selector,
      mode,
      jwtRules: p.ruleList(jwtRule).min(1).describe('JWT rules; a token is checked by the rule of its issuer. A token no rule knows is refused.'),
      onMissingToken: z
        .enum(['deny', 'allow-anonymous'])
        .default('deny')
        .describe('Calls without a token: deny (401), or allow-anonymous (continue without a request principal; authz decides). A token that fails verification is always refused.'),
    })
    .superRefine((spec, ctx) => {
      refineUniqueNames(spec.jwtRules, ctx, 'jwtRules', 'rule name');
      const issuers = new Map<string, number>();
      spec.jwtRules.forEach((rule, i) => {
        const first = issuers.get(rule.issuer);
        if (first === undefined) issuers.set(rule.issuer, i);
        else ctx.addIssue({ code: 'custom', path: ['jwtRules', i, 'issuer'], message: `issuer "${rule.issuer}" is already used by jwtRules[${first}]` });
      });
    });
}

export function requestAuthenticationSchema(limits: PolicyLimits) {
  return documentSchema('RequestAuthentication', schemaParts(limits), requestAuthenticationSpecSchema(limits));
}

export type RequestAuthenticationSpec = z.output<ReturnType<typeof requestAuthenticationSpecSchema>>;
export type RequestAuthenticationDocument = z.output<ReturnType<typeof requestAuthenticationSchema>>;
export type JwtRule = RequestAuthenticationSpec['jwtRules'][number];
