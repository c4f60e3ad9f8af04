import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { BENCH_WORKLOAD } from './target-meshgate-policy.ts';

/*
 * bench:filters policy: one document per per-call filter of the inbound chain,
 * all selecting the bench workload (default/bench); lib/target-meshgate-policy.ts
 * writes them as the sidecar's last-known-good snapshot file.
 *
 *  - IPAccessPolicy: allow list with 127.0.0.1 (the load generator's address);
 *  - RequestAuthentication: one JWT rule, inline JWKS (an ES256 key made here);
 *  - AuthorizationPolicy: ALLOW, a few rules; the one that matches the load is
 *    by method, path and requestPrincipals (the JWT's iss/sub), so authz needs
 *    authn's verified claims;
 *  - RateLimitPolicy: a local bucket per verified `sub` claim, never emptied
 *    (the cost of counting, not of refusing);
 *  - ValidationPolicy: header checks on every call (no body is read: GETs).
 */

const ISSUER = 'https://idp.bench.meshgate';
const SUBJECT = 'load-generator';
const AUDIENCE = 'bench';

export interface FiltersPolicy {
  /** Bearer token the load generator sends (`authorization` header value). */
  readonly authorization: string;
  /** The documents, in input form. */
  readonly documents: readonly unknown[];
}

function documents(publicJwk: Record<string, unknown>): unknown[] {
  const metadata = (name: string) => ({ name, namespace: BENCH_WORKLOAD.namespace });
  const selector = { services: [BENCH_WORKLOAD.service] };
  return [
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'IPAccessPolicy',
      metadata: metadata('bench-ip'),
      spec: { selector, allow: ['127.0.0.1/32', '::1/128', '10.0.0.0/8'], deny: ['192.0.2.0/24'] },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'RequestAuthentication',
      metadata: metadata('bench-jwt'),
      spec: {
        selector,
        jwtRules: [
          {
            name: 'bench-idp',
            issuer: ISSUER,
            jwks: { keys: [publicJwk] },
            audiences: [AUDIENCE],
            algorithms: ['ES256'],
            fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }],
          },
        ],
      },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: metadata('bench-allow'),
      spec: {
        selector,
        action: 'ALLOW',
        rules: [
          { name: 'admin-only', from: [{ requestPrincipals: [`${ISSUER}/admin`] }], to: [{ paths: ['/admin/*'] }] },
          { name: 'health', to: [{ methods: ['GET'], paths: ['/healthz'] }] },
          { name: 'api-writes', from: [{ requestPrincipals: [`${ISSUER}/*`] }], to: [{ methods: ['POST', 'PUT'], paths: ['/api/*'] }] },
          { name: 'bench-load', from: [{ requestPrincipals: [`${ISSUER}/${SUBJECT}`] }], to: [{ methods: ['GET', 'HEAD'], paths: ['/', '/api/*'] }] },
        ],
      },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'RateLimitPolicy',
      metadata: metadata('bench-limits'),
      spec: { selector, rules: [{ name: 'per-subject', key: ['claim:sub'], limit: { requests: 1_000_000, per: '1s' } }] },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'ValidationPolicy',
      metadata: metadata('bench-input'),
      spec: { selector, rules: [{ name: 'headers', requiredHeaders: ['authorization'], maxHeaderBytes: '16KiB' }] },
    },
  ];
}

/** Makes the key, the token and the documents (input form; lib/target-meshgate-policy.ts validates and writes them). */
export async function createFiltersPolicy(): Promise<FiltersPolicy> {
  const pair = await generateKeyPair('ES256');
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
  const now = Math.floor(Date.now() / 1000);
  // Valid for a day: longer than any run.
  const token = await new SignJWT({ iss: ISSUER, sub: SUBJECT, aud: AUDIENCE, iat: now, exp: now + 86_400 }).setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'JWT' }).sign(pair.privateKey);
  return { authorization: `Bearer ${token}`, documents: documents(publicJwk) };
}
