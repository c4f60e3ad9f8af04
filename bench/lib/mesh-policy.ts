import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { stringify } from 'yaml';

/*
 * What bench:mesh sends and the policy folder of its mesh rows.
 *
 * Every row gets the same request, so the rows differ only by the path:
 * `POST /orders` with a small JSON body, `content-type: application/json`,
 * `host: orders` (how the frontend's outbound listener names the service) and
 * `authorization: Bearer <JWT>` (only the all-filters row checks it).
 *
 * `mesh`: one AuthorizationPolicy (ALLOW the frontend's SPIFFE ID to call
 * /orders). `mesh-all-filters`: every per-call filter of the inbound chain on
 * orders: IPAccessPolicy (allow loopback), RequestAuthentication (ES256 JWT,
 * inline JWKS), the AuthorizationPolicy also requiring the JWT's principal, a
 * local RateLimitPolicy far above any rate reached (the cost of counting, not
 * of refusing), and a ValidationPolicy reading the JSON body against a schema.
 */

export const NAMESPACE = 'shop';
const ISSUER = 'https://idp.bench.meshgate';
const SUBJECT = 'load-generator';
const FRONTEND = `spiffe://cluster.local/ns/${NAMESPACE}/sa/frontend`;

export interface MeshRequest {
  readonly path: string;
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export interface MeshPolicy {
  readonly request: MeshRequest;
  /** Policy folder files (path relative to the folder -> YAML) of each mesh row. */
  readonly folders: { readonly mesh: Record<string, string>; readonly allFilters: Record<string, string> };
}

const yamlDocuments = (documents: readonly unknown[]): string => documents.map((d) => stringify(d)).join('---\n');

function documents(publicJwk: Record<string, unknown>, allFilters: boolean): unknown[] {
  const metadata = (name: string) => ({ name, namespace: NAMESPACE });
  const selector = { services: ['orders'] };
  const to = [{ methods: ['POST', 'GET'], paths: ['/orders', '/orders/*'] }];
  const authorization = {
    apiVersion: 'meshgate.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: metadata('orders-allow'),
    spec: { selector, action: 'ALLOW', rules: [{ name: 'frontend', from: [{ principals: [FRONTEND], ...(allFilters ? { requestPrincipals: [`${ISSUER}/${SUBJECT}`] } : {}) }], to }] },
  };
  if (!allFilters) return [authorization];
  return [
    { apiVersion: 'meshgate.dev/v1', kind: 'IPAccessPolicy', metadata: metadata('orders-ip'), spec: { selector, allow: ['127.0.0.1/32', '10.0.0.0/8'], deny: ['192.0.2.0/24'] } },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'RequestAuthentication',
      metadata: metadata('orders-jwt'),
      spec: { selector, jwtRules: [{ name: 'bench-idp', issuer: ISSUER, audiences: ['orders'], algorithms: ['ES256'], jwks: { keys: [publicJwk] } }] },
    },
    authorization,
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'RateLimitPolicy',
      metadata: metadata('orders-limit'),
      spec: { selector, rules: [{ name: 'per-caller', key: ['source.principal'], limit: { requests: 1_000_000, per: '1s' }, burst: 1_000_000 }] },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'ValidationPolicy',
      metadata: metadata('orders-input'),
      spec: {
        selector,
        rules: [
          {
            name: 'create',
            match: { paths: ['/orders'], methods: ['POST'] },
            requiredHeaders: ['authorization'],
            maxHeaderBytes: '16KiB',
            contentTypes: ['application/json'],
            maxBodyBytes: '4KiB',
            jsonSchema: {
              type: 'object',
              required: ['item', 'qty'],
              properties: { item: { type: 'string', pattern: '^[A-Z]{3}-[0-9]+$' }, qty: { type: 'integer', minimum: 1 } },
            },
          },
        ],
      },
    },
  ];
}

/** A fresh IdP key, a token valid for a day (longer than any run), the request and both policy folders. */
export async function createMeshPolicy(): Promise<MeshPolicy> {
  const pair = await generateKeyPair('ES256');
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ iss: ISSUER, sub: SUBJECT, aud: 'orders', iat: now, exp: now + 86_400 }).setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'JWT' }).sign(pair.privateKey);
  return {
    request: {
      path: '/orders',
      method: 'POST',
      headers: { host: 'orders', 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ item: 'ABC-123', qty: 2 }),
    },
    folders: {
      mesh: { [`${NAMESPACE}/mesh.yaml`]: yamlDocuments(documents(publicJwk, false)) },
      allFilters: { [`${NAMESPACE}/mesh-all-filters.yaml`]: yamlDocuments(documents(publicJwk, true)) },
    },
  };
}
