import type { JsonWebKey } from 'node:crypto';
import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { documentSchema, duration, headerName, mode, positiveDuration, refineUniqueNames, ruleName, schemaParts } from './common.ts';

/*
 * RequestAuthentication, modelled on Istio's: per-workload JWT rules. Only
 * asymmetric algorithms are accepted (never `none`, never HS*): a verifier
 * that holds a public key must not be talked into using it as an HMAC secret.
 * Inline keys must be public keys for the same reason, and must fit at least
 * one allowed algorithm. Opaque OAuth2 tokens are checked by introspection
 * (RFC 7662), whose client secret is a file name in a folder the sidecar's
 * operator chose, never a path.
 */

const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** The header tokens are read from when a rule names no location. */
const DEFAULT_TOKEN_HEADER = Object.freeze({ name: 'authorization', prefix: 'Bearer ' });

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

const secureUrl = z
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
const jwksUri = secureUrl;

/**
 * A file name in the sidecar's folder of authentication secrets (an operator
 * mount), never a path: documents are written by namespace owners, who must
 * not be able to have a sidecar send any file it can read to an endpoint.
 */
const secretFileName = z
  .string()
  .max(255)
  .regex(/^[A-Za-z0-9_][A-Za-z0-9._-]*$/, 'expected a file name in the sidecar secrets folder (letters, digits, ".", "_", "-"; no "/")')
  .refine((text) => !text.includes('..'), 'expected a file name in the sidecar secrets folder (letters, digits, ".", "_", "-"; no "/")');

function requestAuthenticationSpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const tokenName = z
    .string()
    .min(1)
    .max(256)
    .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a cookie or query parameter name');

  const tokenLocations = {
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
  };
  const withDefaultLocation = <T extends { fromHeaders?: unknown; fromCookies?: unknown; fromParams?: unknown }>(rule: T): T =>
    rule.fromHeaders === undefined && rule.fromCookies === undefined && rule.fromParams === undefined ? { ...rule, fromHeaders: [{ ...DEFAULT_TOKEN_HEADER }] } : rule;

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
      clockSkew: duration
        .refine((ms) => ms <= 300_000, 'must be at most 5m')
        .default(30_000)
        .describe('Leeway for exp and nbf.'),
      ...tokenLocations,
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
    .transform(withDefaultLocation);

  const introspection = z
    .strictObject({
      name: ruleName.default('introspection').describe('Rule name in decision ids and metrics.'),
      endpoint: secureUrl.describe('RFC 7662 introspection endpoint (https; plain http only for localhost).'),
      clientId: z.string().min(1).max(256).describe('Client id the sidecar authenticates to the endpoint with (HTTP Basic).'),
      clientSecretFile: secretFileName.describe("File name of the client secret in the sidecar's authentication secrets folder."),
      issuer: z.string().min(1).max(limits.maxPatternLength).optional().describe('Expected `iss` when the answer has one; the principal issuer when it has none (else the endpoint URL).'),
      audiences: p.list(z.string().min(1).max(limits.maxPatternLength)).optional().describe('Accepted `aud` values, checked when the answer has an `aud`.'),
      clockSkew: duration
        .refine((ms) => ms <= 300_000, 'must be at most 5m')
        .default(30_000)
        .describe('Leeway for exp and nbf of the answer.'),
      cacheTtl: positiveDuration
        .refine((ms) => ms <= 3_600_000, 'must be at most 1h')
        .default(60_000)
        .describe("How long an answer is reused; never past the token's exp."),
      cacheSize: z.number().int().min(1).max(1_000_000).default(10_000).describe('Answers kept (least recently used dropped first).'),
      timeout: positiveDuration
        .refine((ms) => ms <= 30_000, 'must be at most 30s')
        .default(2_000)
        .describe('Per introspection request; past it the call is refused with 503.'),
      ...tokenLocations,
    })
    .transform(withDefaultLocation);

  return z
    .strictObject({
      selector: p.selector,
      mode,
      jwtRules: p.ruleList(jwtRule).default([]).describe('JWT rules; a token is checked by the rule of its issuer. A token no rule knows is refused (or introspected, with introspection).'),
      introspection: introspection.optional().describe('OAuth2 token introspection (RFC 7662) for opaque tokens, and JWTs of issuers no rule names.'),
      onMissingToken: z
        .enum(['deny', 'allow-anonymous'])
        .default('deny')
        .describe('Calls without a token: deny (401), or allow-anonymous (continue without a request principal; authz decides). A token that fails verification is always refused.'),
    })
    .superRefine((spec, ctx) => {
      if (spec.jwtRules.length === 0 && spec.introspection === undefined) {
        ctx.addIssue({ code: 'custom', path: ['jwtRules'], message: 'must not be empty (or give introspection)' });
      }
      refineUniqueNames(spec.jwtRules, ctx, 'jwtRules', 'rule name');
      if (spec.introspection && spec.jwtRules.some((rule) => rule.name === spec.introspection!.name)) {
        ctx.addIssue({ code: 'custom', path: ['introspection', 'name'], message: `rule name "${spec.introspection.name}" is already used by a JWT rule` });
      }
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

type RequestAuthenticationSpec = z.output<ReturnType<typeof requestAuthenticationSpecSchema>>;
export type RequestAuthenticationDocument = z.output<ReturnType<typeof requestAuthenticationSchema>>;
export type JwtRule = RequestAuthenticationSpec['jwtRules'][number];
export type IntrospectionRule = NonNullable<RequestAuthenticationSpec['introspection']>;
