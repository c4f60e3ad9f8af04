import { z } from 'zod';
import { byteSize, duration } from './durations.ts';

/*
 * The `adminApi:` section of the policy-server configuration: who may call
 * the admin API (mTLS client certificate or bearer JWT), what each caller may
 * do (role bindings), and where every change attempt is recorded. Kept
 * self-contained so the policy-server schema embeds it as one field.
 * Relative file paths are resolved against the config file's directory by
 * the role, like every other file in meshgate configs.
 */

/**
 * Asymmetric JWS algorithms only. `none` and HS* are absent on purpose: an
 * HMAC secret would be shared with every token issuer, and a verifier that
 * accepts HS256 with a public key as the secret is the classic JWT forgery.
 */
const ADMIN_JWT_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

const ADMIN_ROLES = ['admin', 'developer', 'viewer'] as const;

export type AdminRole = (typeof ADMIN_ROLES)[number];

const file = z.string().min(1);

/** A subject or namespace pattern: exact, or a prefix ending in `*`. One `*`, last. */
const pattern = z
  .string()
  .min(1)
  .refine((p) => !p.slice(0, -1).includes('*'), 'expected an exact value or a prefix ending in `*` (a `*` only at the end)');

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

const jwksUri = z.url({ protocol: /^https?$/ }).refine((uri) => {
  const url = new URL(uri);
  return url.protocol === 'https:' || LOOPBACK_HOSTS.has(url.hostname);
}, 'expected an https:// URL (http:// only for a loopback address): keys fetched in the clear could be swapped');

const jwt = z
  .strictObject({
    issuers: z.array(z.string().min(1)).min(1).describe('Accepted `iss` values.'),
    audiences: z.array(z.string().min(1)).min(1).default(['meshgate-policy-admin']).describe('Accepted `aud` values; a token must name at least one.'),
    publicKeyFile: file.optional().describe('PEM public key (SPKI) that signs admin tokens.'),
    jwksFile: file.optional().describe('JWKS file (JSON) of admin token signing keys.'),
    jwksUri: jwksUri.optional().describe("JWKS URL fetched and cached by the server (https, or http to a loopback address). The token's `jku` / `x5u` headers are never followed."),
    algorithms: z.array(z.enum(ADMIN_JWT_ALGORITHMS)).min(1).default(['ES256', 'RS256']).describe('Accepted signature algorithms (asymmetric only; `none` and HS* are never accepted).'),
    clockSkew: duration.default(30_000).describe('Tolerance for `exp` and `nbf` against the server clock.'),
    subjectClaim: z.string().min(1).default('sub').describe("Claim whose (string) value is the caller's subject in role bindings and the audit log."),
  })
  .refine((t) => [t.publicKeyFile, t.jwksFile, t.jwksUri].filter((v) => v !== undefined).length === 1, {
    message: 'expected exactly one of publicKeyFile, jwksFile, jwksUri',
  });

const binding = z.strictObject({
  subjects: z.array(pattern).min(1).describe('SPIFFE IDs (mTLS) or JWT subjects; a trailing `*` matches any suffix, e.g. `spiffe://cluster.local/ns/platform/*`.'),
  role: z.enum(ADMIN_ROLES).describe('`admin` (everything), `developer` (read; write outside production namespaces), `viewer` (read).'),
});

export const adminApiConfigSchema = z.strictObject({
  mtls: z
    .strictObject({
      enabled: z.boolean().default(true).describe("Accept a verified client certificate's SPIFFE ID as the caller (only when the admin listener serves TLS)."),
      trustDomains: z.array(z.string().min(1)).default([]).describe('Accepted trust domains of client SPIFFE IDs; empty: any that chains to the trust bundle.'),
    })
    .prefault({})
    .describe('Callers identified by their mTLS client certificate (URI SAN `spiffe://...`).'),
  jwt: jwt.optional().describe('Callers identified by a bearer JWT (`Authorization: Bearer ...`); omit to accept client certificates only.'),
  roleBindings: z.array(binding).default([]).describe('Who has which role. A caller matching no binding is refused everything (403); matching several, it gets the strongest role.'),
  productionNamespaces: z
    .array(pattern)
    .default([])
    .describe('Namespaces only `admin` may write (a trailing `*` matches any suffix). `meshgate-system` (applies to every workload) is always treated as production.'),
  audit: z
    .strictObject({
      file: file.default('policy-audit.jsonl').describe('Append-only JSON-lines file of every change attempt (created mode 0600).'),
    })
    .prefault({})
    .describe('Audit log of admin API changes.'),
  maxBodyBytes: byteSize
    .pipe(
      z
        .number()
        .min(1024, 'expected at least 1KiB')
        .max(16 * 1024 * 1024, 'expected at most 16MiB'),
    )
    .default(262_144)
    .describe('Largest accepted request body (a policy document); larger bodies get 413.'),
});

export type AdminApiConfigInput = z.input<typeof adminApiConfigSchema>;
export type AdminApiConfig = z.output<typeof adminApiConfigSchema>;
export type AdminJwtConfig = NonNullable<AdminApiConfig['jwt']>;
export type AdminRbacConfig = Pick<AdminApiConfig, 'roleBindings' | 'productionNamespaces'>;
