import type { JWTPayload } from 'jose';
import { generateKeyPair, SignJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { FRONTEND, ordersUsers, startMesh } from '../helpers/mesh.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';

/*
 * End to end: frontend's app -> frontend sidecar -> mTLS -> orders sidecar
 * (ip-access -> authn -> authz) -> orders app. The JWT travels from the
 * calling app as a bearer token; orders' sidecar verifies it against a JWKS
 * served on loopback and an AuthorizationPolicy admits one request principal.
 */

const ISSUER = 'https://idp.test';

describe('request authentication through two sidecars', () => {
  let mesh: Mesh;
  let h: PolicyHarness;
  let jwks: TestIdp;
  let orders: TestSidecar;

  const token = (claims: JWTPayload, lifetime = 300): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    return jwks.sign({ iss: ISSUER, aud: 'orders', iat: now, exp: now + lifetime, ...claims });
  };
  const call = async (p: string, headers: Record<string, string> = {}) => {
    const res = await mesh.call(p, { headers });
    return { status: res.status, headers: res.headers, body: JSON.parse(res.text) as Record<string, unknown> };
  };

  beforeAll(async () => {
    jwks = await startTestIdp();
    mesh = await startMesh({
      policies: {
        'shop/authn.yaml': ordersUsers(ISSUER, `${jwks.url}/jwks`, { rule: { fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }], fromParams: ['access_token'] } }),
        'shop/authz.yaml': policyYaml('AuthorizationPolicy', 'orders-alice', {
          selector: { services: ['orders'] },
          action: 'ALLOW',
          rules: [{ name: 'alice-reads', from: [{ principals: [FRONTEND], requestPrincipals: [`${ISSUER}/alice`] }], to: [{ methods: ['GET'], paths: ['/orders/*'] }] }],
        }),
      },
      ready: { headers: { authorization: `Bearer ${await token({ sub: 'alice' })}` } },
    });
    ({ h, orders } = mesh);
  }, 30_000);

  afterAll(async () => {
    await mesh?.close();
    await jwks?.close();
  });

  it('a JWT-authenticated call is allowed by a requestPrincipals rule; the app gets the claims, not the token', async () => {
    const res = await call('/orders/1', { authorization: `Bearer ${await token({ sub: 'alice', tenant: 'acme' })}` });
    expect(res.status).toBe(200);
    const seen = res.body.headers as Record<string, string>;
    expect(seen.authorization).toBeUndefined();
    expect(JSON.parse(Buffer.from(seen['x-jwt-claims']!, 'base64url').toString())).toMatchObject({ iss: ISSUER, sub: 'alice', tenant: 'acme' });
    expect(seen['x-forwarded-client-cert']).toContain('spiffe://cluster.local/ns/shop/sa/frontend');
  });

  it('a token in a query parameter is verified and cut out of the URL the app gets', async () => {
    const res = await call(`/orders/1?page=2&access_token=${await token({ sub: 'alice' })}&sort=asc`);
    expect(res.status).toBe(200);
    expect(res.body.url).toBe('/orders/1?page=2&sort=asc');
  });

  it('an unauthenticated call is refused with 401 authn.missing_token', async () => {
    const res = await call('/orders/1');
    expect(res.status).toBe(401);
    expect(res.body).toMatchObject({ code: 'authn.missing_token', rule: 'shop/orders-users#missing-token' });
    expect(res.headers['www-authenticate']).toBe('Bearer');
  });

  it('a caller cannot forge the claims header', async () => {
    const forged = Buffer.from(JSON.stringify({ iss: ISSUER, sub: 'alice' })).toString('base64url');
    const res = await call('/orders/1', { 'x-jwt-claims': forged });
    expect(res.status).toBe(401);
  });

  it('a verified principal the policy does not name is denied by authorization (403)', async () => {
    const res = await call('/orders/1', { authorization: `Bearer ${await token({ sub: 'bob' })}` });
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'authz.denied' });
  });

  it('a token that fails verification is refused with the reason code of what failed', async () => {
    const expired = await call('/orders/1', { authorization: `Bearer ${await token({ sub: 'alice' }, -120)}` });
    expect([expired.status, expired.body.code]).toEqual([401, 'authn.jwt_expired']);
    const wrongAudience = await call('/orders/1', { authorization: `Bearer ${await token({ sub: 'alice', aud: 'payments' })}` });
    expect([wrongAudience.status, wrongAudience.body.code]).toEqual([401, 'authn.jwt_audience']);
    const other = await generateKeyPair('ES256');
    const forgedToken = await new SignJWT({ iss: ISSUER, sub: 'alice', aud: 'orders', exp: Math.floor(Date.now() / 1000) + 60 })
      .setProtectedHeader({ alg: 'ES256', kid: 'e2e' })
      .sign(other.privateKey);
    const forged = await call('/orders/1', { authorization: `Bearer ${forgedToken}` });
    expect([forged.status, forged.body.code]).toEqual([401, 'authn.jwt_invalid']);
  });

  it('a RequestAuthentication in shadow mode counts would-deny calls in meshgate_shadow_denials_total', async () => {
    await h.write(
      'shop/authn-trial.yaml',
      `apiVersion: meshgate.dev/v1
kind: RequestAuthentication
metadata: { name: trial, namespace: shop }
spec:
  selector: { services: [orders] }
  mode: shadow
  onMissingToken: allow-anonymous
  jwtRules: [{ name: new-idp, issuer: "https://new-idp.test", jwksUri: "${jwks.url}/jwks", audiences: [somebody-else] }]
`,
    );
    const trialToken = await token({ iss: 'https://new-idp.test', sub: 'alice' });
    const counted = async (): Promise<number> => {
      const text = await (await request(`${orders.adminUrl}/metrics`)).body.text();
      const line = text.split('\n').find((l) => l.startsWith('meshgate_shadow_denials_total{') && l.includes('policy="shop/trial"') && l.includes('rule="new-idp"'));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    // Once the snapshot is in force, the failing trial token is counted; the call then has no accepted token, and the enforcing document wants one.
    await expect.poll(async () => (await call('/orders/1', { authorization: `Bearer ${trialToken}` })).body.code, { timeout: 5_000, interval: 50 }).toBe('authn.missing_token');
    const before = await counted();
    expect(before).toBeGreaterThan(0);
    await call('/orders/1', { authorization: `Bearer ${trialToken}` });
    expect(await counted()).toBe(before + 1);
    // Enforcement of the other document is unchanged.
    expect((await call('/orders/1', { authorization: `Bearer ${await token({ sub: 'alice' })}` })).status).toBe(200);
  });
});
