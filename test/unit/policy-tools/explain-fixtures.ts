import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { parsePolicyFolder } from '../../../src/policy/parse-documents.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';

/* The small policy set of the explain and diff tests, written to a folder at test start. */

export const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
export const BILLING = 'spiffe://cluster.local/ns/shop/sa/billing';
export const IDP = 'https://idp.example';
export const ORDERS = { service: 'orders', namespace: 'shop' } as const;

const ALLOW = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: allow-frontend, namespace: shop }
spec:
  selector: { services: [orders] }
  action: ALLOW
  rules:
    - name: frontend-orders
      from: [{ principals: ["${FRONTEND}"] }]
      to: [{ methods: [GET, POST], paths: ["/orders/*"] }]
    - name: idp-reports
      from: [{ requestPrincipals: ["${IDP}/*"] }]
      to: [{ paths: ["/reports*"] }]
`;

const DENY = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: shop }
spec:
  action: DENY
  rules:
    - name: admin
      to: [{ paths: ["/admin*"] }]
`;

const IP = `apiVersion: meshgate.dev/v1
kind: IPAccessPolicy
metadata: { name: blocklist, namespace: shop }
spec:
  deny: [203.0.113.0/24, "2001:db8::/32"]
`;

/** The new set: billing may now read orders; POST /orders/* is denied. */
const ALLOW_NEW = ALLOW.replace(`principals: ["${FRONTEND}"]`, `principals: ["${FRONTEND}", "${BILLING}"]`);
const DENY_NEW = `${DENY}    - name: no-writes
      to: [{ methods: [POST], paths: ["/orders/*"] }]
`;

function requestAuthentication(jwk: JWK): string {
  return `apiVersion: meshgate.dev/v1
kind: RequestAuthentication
metadata: { name: idp, namespace: shop }
spec:
  onMissingToken: allow-anonymous
  jwtRules: [{ name: idp, issuer: "${IDP}", audiences: [orders], algorithms: [ES256], jwks: { keys: [${JSON.stringify(jwk)}] } }]
`;
}

/** Writes `old/` and `new/` under `dir` (plus one invalid document in `old/`); returns their paths. */
export async function writePolicySets(dir: string, jwk: JWK): Promise<{ old: string; new: string }> {
  const old = join(dir, 'old');
  const next = join(dir, 'new');
  await mkdir(join(old, 'shop'), { recursive: true });
  await mkdir(join(next, 'shop'), { recursive: true });
  await writeFile(join(old, 'shop', 'authz.yaml'), `${ALLOW}---\n${DENY}`);
  await writeFile(join(old, 'shop', 'ip.yaml'), IP);
  await writeFile(join(old, 'shop', 'authn.yaml'), requestAuthentication(jwk));
  await writeFile(join(old, 'shop', 'typo.yaml'), 'apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata: { name: typo, namespace: shop }\nspec: { action: PERMIT }\n');
  await writeFile(join(next, 'shop', 'authz.yaml'), `${ALLOW_NEW}---\n${DENY_NEW}`);
  await writeFile(join(next, 'shop', 'ip.yaml'), IP);
  await writeFile(join(next, 'shop', 'authn.yaml'), requestAuthentication(jwk));
  return { old, new: next };
}

export async function load(dir: string): Promise<PolicyDocument[]> {
  return (await parsePolicyFolder(dir)).documents.map((d) => d.document);
}
