import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { parsePolicyFolder } from '../../../src/policy/parse-documents.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { policyYaml } from '../../helpers/policy-yaml.ts';

/* The small policy set of the explain and diff tests, written to a folder at test start. */

export const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
export const BILLING = 'spiffe://cluster.local/ns/shop/sa/billing';
export const IDP = 'https://idp.example';
export const ORDERS = { service: 'orders', namespace: 'shop' } as const;

const allow = (frontendPrincipals: string[]): string =>
  policyYaml('AuthorizationPolicy', 'allow-frontend', {
    selector: { services: ['orders'] },
    action: 'ALLOW',
    rules: [
      { name: 'frontend-orders', from: [{ principals: frontendPrincipals }], to: [{ methods: ['GET', 'POST'], paths: ['/orders/*'] }] },
      { name: 'idp-reports', from: [{ requestPrincipals: [`${IDP}/*`] }], to: [{ paths: ['/reports*'] }] },
    ],
  });
const deny = (writesToo: boolean): string =>
  policyYaml('AuthorizationPolicy', 'deny-admin', {
    action: 'DENY',
    rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }, ...(writesToo ? [{ name: 'no-writes', to: [{ methods: ['POST'], paths: ['/orders/*'] }] }] : [])],
  });

const ALLOW = allow([FRONTEND]);
const DENY = deny(false);
const IP = policyYaml('IPAccessPolicy', 'blocklist', { deny: ['203.0.113.0/24', '2001:db8::/32'] });

/** The new set: billing may now read orders; POST /orders/* is denied. */
const ALLOW_NEW = allow([FRONTEND, BILLING]);
const DENY_NEW = deny(true);

const requestAuthentication = (jwk: JWK): string =>
  policyYaml('RequestAuthentication', 'idp', {
    onMissingToken: 'allow-anonymous',
    jwtRules: [{ name: 'idp', issuer: IDP, audiences: ['orders'], algorithms: ['ES256'], jwks: { keys: [jwk] } }],
  });

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

/**
 * frontend's Route to orders: v1 browned out on 2026-05-05 10:00-11:00 UTC (then again on 2026-06-01), retired v0,
 * successor v2; route `legacy` sends /orders/legacy* to v1 only. With an ALLOW for frontend, so only the version decides.
 */
const VERSIONS_ROUTE = policyYaml('Route', 'orders-versions', {
  selector: { services: ['frontend'] },
  service: 'orders',
  routes: [{ name: 'legacy', match: { path: { prefix: '/orders/legacy' } }, backends: [{ subset: { version: 'v1' } }] }, { name: 'rest' }],
  versions: [
    {
      name: 'v1',
      subset: { version: 'v1' },
      deprecated: { sunset: '2026-06-30', message: 'v1 goes away' },
      brownouts: [
        { start: '2026-05-05T10:00:00Z', end: '2026-05-05T11:00:00Z' },
        { start: '2026-06-01', end: '2026-06-02' },
      ],
      successor: { version: 'v2', link: 'https://docs.example/orders/v2' },
    },
    { name: 'v0', subset: { version: 'v0' }, retired: true },
    { name: 'v2', subset: { version: 'v2' } },
  ],
});

/** Writes the versions set (the Route and an ALLOW for frontend) to `dir/versions`; returns its path. */
export async function writeVersionsSet(dir: string): Promise<string> {
  const folder = join(dir, 'versions');
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, 'route.yaml'), `${VERSIONS_ROUTE}---\n${ALLOW}`);
  return folder;
}

export async function load(dir: string): Promise<PolicyDocument[]> {
  return (await parsePolicyFolder(dir)).documents.map((d) => d.document);
}
