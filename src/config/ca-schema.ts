import { isIP } from 'node:net';
import { z } from 'zod';
import { isValidTrustDomain } from '../core/spiffe-id.ts';
import { duration } from './durations.ts';
import { roleLogSchema, roleTelemetrySchema } from './telemetry-schema.ts';

/*
 * The CA configuration file (`meshgate ca --config ca.yaml`). Every field is
 * described once, here; the README's CA reference is generated from these
 * descriptions. Relative file paths are resolved against the directory of
 * the config file, so a folder written by `meshgate certs init` can be moved
 * or mounted anywhere as a whole.
 */

const listener = (defaultPort: number, defaultAddress: string) =>
  z.strictObject({
    address: z.string().min(1).default(defaultAddress).describe('Address to bind.'),
    port: z.number().int().min(0).max(65535).default(defaultPort).describe('Port to bind; 0 picks a free port.'),
  });

const file = z.string().min(1);

/**
 * Asymmetric JWS algorithms only. `none` and the HS* family are not in the
 * list on purpose: an HMAC secret would be a shared secret between the CA and
 * every token issuer, and a confused verifier that accepts HS256 with a public
 * key as the secret is the classic JWT forgery.
 */
export const TOKEN_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

export const LEAF_KEY_TYPES = ['ecdsa-p256', 'rsa-2048'] as const;

const tokens = z
  .strictObject({
    issuers: z.array(z.string().min(1)).min(1).describe('Accepted `iss` values, e.g. `meshgate` and the cluster issuer `https://kubernetes.default.svc.cluster.local`.'),
    audiences: z.array(z.string().min(1)).min(1).default(['meshgate-ca']).describe('Accepted `aud` values; a token must name at least one.'),
    publicKeyFile: file.optional().describe('PEM public key (SPKI) that signs tokens, e.g. `token-signing.pub.pem` from `meshgate certs init`.'),
    jwksFile: file.optional().describe("JWKS file (JSON) of token signing keys, e.g. the cluster's `/openid/v1/jwks`."),
    jwksUri: z
      .url({ protocol: /^https?$/ })
      .optional()
      .describe("JWKS URL fetched and cached by the CA. The token's own `jku` / `x5u` headers are never followed."),
    jwksCaFile: file.optional().describe('PEM roots that verify an https `jwksUri` instead of the system roots, e.g. the cluster CA `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.'),
    jwksTokenFile: file
      .optional()
      .describe(
        "Bearer token sent with each `jwksUri` fetch (re-read every time, it rotates), e.g. the CA's own `/var/run/secrets/kubernetes.io/serviceaccount/token`: the API server serves its keys to authenticated callers only. https only.",
      ),
    algorithms: z.array(z.enum(TOKEN_ALGORITHMS)).min(1).default(['ES256', 'RS256']).describe('Accepted signature algorithms (asymmetric only; `none` and HS* are never accepted).'),
    clockSkew: duration.default(30_000).describe('Tolerance for `exp` and `nbf` against the CA clock.'),
  })
  .refine((t) => [t.publicKeyFile, t.jwksFile, t.jwksUri].filter((v) => v !== undefined).length === 1, {
    message: 'expected exactly one of publicKeyFile, jwksFile, jwksUri',
  })
  .refine((t) => t.jwksUri !== undefined || (t.jwksCaFile === undefined && t.jwksTokenFile === undefined), {
    message: 'jwksCaFile and jwksTokenFile need jwksUri',
  })
  // The token must never cross the network in the clear.
  // A missing jwksUri is the refinement above's line; this one is about its scheme.
  .refine((t) => t.jwksTokenFile === undefined || t.jwksUri === undefined || t.jwksUri.startsWith('https:'), {
    message: 'jwksTokenFile needs an https jwksUri',
  });

export const caConfigSchema = z.strictObject({
  trustDomain: z
    .string()
    .refine(isValidTrustDomain, 'expected a trust domain: lower-case letters, digits, dots and dashes, e.g. cluster.local')
    .describe('SPIFFE trust domain: identities are `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.'),
  listen: listener(15012, '0.0.0.0').prefault({}).describe('gRPC listener (TLS) of the CA API.'),
  admin: listener(15013, '127.0.0.1').prefault({}).describe('Admin endpoints: /live, /ready, /metrics, /config_dump.'),
  signing: z
    .strictObject({
      certFile: file.describe('PEM certificate of the issuing CA (the root, or an intermediate).'),
      keyFile: file.describe('PEM private key of the issuing CA (PKCS#8, SEC1 or PKCS#1). Keep it mode 0600.'),
      chainFiles: z.array(file).default([]).describe('PEM intermediates between the issuing CA and a root, nearest first; sent in every reply after the leaf.'),
    })
    .describe('The CA that signs workload certificates.'),
  trustBundle: z
    .strictObject({
      files: z.array(file).min(1).describe('PEM files holding every root in force: one normally, the old and the new during a root rotation.'),
    })
    .describe('Roots served to workloads; the issuing CA must chain to one of them.'),
  serving: z
    .strictObject({
      dnsNames: z.array(z.string().min(1)).default(['localhost', 'meshgate-ca']).describe("DNS names in the CA's own TLS certificate (the names clients dial)."),
      ipAddresses: z
        .array(z.string().refine((ip) => isIP(ip) !== 0, 'expected an IPv4 or IPv6 address'))
        .default(['127.0.0.1', '::1'])
        .describe("IP addresses in the CA's own TLS certificate."),
    })
    .prefault({})
    .describe("The CA's TLS serving certificate, issued at start by the signing CA for `spiffe://<trustDomain>/ns/meshgate-system/sa/meshgate-ca` and renewed at half its lifetime."),
  tokens: tokens.describe('Bootstrap tokens (JWT): a Kubernetes projected service-account token or one minted by `meshgate token`.'),
  leaf: z
    .strictObject({
      ttl: duration.default(86_400_000).describe('Lifetime of a workload certificate when the request asks for none.'),
      maxTtl: duration.default(172_800_000).describe("Longest lifetime ever issued, whatever the request asks; never beyond the issuing CA's own expiry."),
      keyTypes: z.array(z.enum(LEAF_KEY_TYPES)).min(1).default(['ecdsa-p256', 'rsa-2048']).describe('Workload key types accepted in a CSR: `ecdsa-p256`, and `rsa-2048` (RSA of 2048 bits or more).'),
    })
    .prefault({})
    .refine((leaf) => leaf.ttl <= leaf.maxTtl, { message: 'ttl must not exceed maxTtl' })
    .describe('Workload (leaf) certificates.'),
  rateLimit: z
    .strictObject({
      perIdentity: z
        .strictObject({
          requests: z.number().int().min(1).default(20).describe('Signings allowed per identity per window.'),
          window: duration.default(60_000).describe('The window (a token bucket refilled evenly over it).'),
        })
        .prefault({})
        .describe('Per SPIFFE ID; more requests get RESOURCE_EXHAUSTED.'),
    })
    .prefault({})
    .describe('Signing rate limits.'),
  audit: z
    .strictObject({
      file: file.optional().describe('Append-only JSON-lines file of every issuance and refusal; when omitted, audit records go to the log.'),
    })
    .prefault({})
    .describe('Audit trail.'),
  log: roleLogSchema,
  telemetry: roleTelemetrySchema,
});

export type CaConfigInput = z.input<typeof caConfigSchema>;
export type CaConfig = z.output<typeof caConfigSchema>;
export type CaTokensConfig = CaConfig['tokens'];
export type LeafKeyType = (typeof LEAF_KEY_TYPES)[number];
