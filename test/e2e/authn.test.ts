import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JWTPayload } from 'jose';
import { generateKeyPair, SignJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig } from '../integration/policy-server-harness.ts';

/*
 * End to end: frontend's app -> frontend sidecar -> mTLS -> orders sidecar
 * (ip-access -> authn -> authz) -> orders app. The JWT travels from the
 * calling app as a bearer token; orders' sidecar verifies it against a JWKS
 * served on loopback and an AuthorizationPolicy admits one request principal.
 */

const ISSUER = 'https://idp.test';

describe('request authentication through two sidecars', () => {
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let jwks: TestIdp;
  let stateDir: string;
  let orders: TestSidecar;
  let frontend: TestSidecar;

  const token = (claims: JWTPayload, lifetime = 300): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    return jwks.sign({ iss: ISSUER, aud: 'orders', iat: now, exp: now + lifetime, ...claims });
  };
  const call = async (p: string, headers: Record<string, string> = {}) => {
    const res = await request(`${frontend.outboundUrl}${p}`, { headers: { host: 'orders.shop', ...headers } });
    const body = (await res.body.json()) as Record<string, unknown>;
    return { status: res.statusCode, headers: res.headers, body };
  };

  const sidecar = async (name: string, extra: Record<string, unknown> = {}): Promise<TestSidecar> =>
    startTestSidecar({
      ...(await meshSidecarConfig(h, name, { servers: [ps.address], stateDir })),
      inbound: { app: 'http://127.0.0.1:1' },
      log: { level: 'warn', accessLog: false },
      ...extra,
    } as Parameters<typeof startTestSidecar>[0]);

  beforeAll(async () => {
    jwks = await startTestIdp();
    h = await createPolicyHarness();
    await h.write(
      'shop/authn.yaml',
      `apiVersion: meshgate.dev/v1
kind: RequestAuthentication
metadata: { name: orders-users, namespace: shop }
spec:
  selector: { services: [orders] }
  jwtRules:
    - name: idp
      issuer: ${ISSUER}
      jwksUri: ${jwks.url}/jwks
      audiences: [orders]
      algorithms: [ES256]
      fromHeaders: [{ name: authorization, prefix: "Bearer " }]
      fromParams: [access_token]
      forwardClaimsHeader: x-jwt-claims
`,
    );
    await h.write(
      'shop/authz.yaml',
      `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: orders-alice, namespace: shop }
spec:
  selector: { services: [orders] }
  action: ALLOW
  rules:
    - name: alice-reads
      from: [{ principals: ["spiffe://cluster.local/ns/shop/sa/frontend"], requestPrincipals: ["${ISSUER}/alice"] }]
      to: [{ methods: [GET], paths: ["/orders/*"] }]
`,
    );
    ps = await h.start();
    app = await startHttpServer(echoHandler('orders'));
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-authn-'));
    orders = await sidecar('orders', { inbound: { app: app.url } });
    frontend = await sidecar('frontend');
    const alice = await token({ sub: 'alice' });
    await eventually(() => call('/orders/1', { authorization: `Bearer ${alice}` }), { until: (res) => res.status === 200, timeoutMs: 10_000, what: "call('/orders/1') to answer 200" });
  }, 30_000);

  afterAll(async () => {
    await frontend?.drain(200);
    await orders?.drain(200);
    await ps?.close().catch(() => {});
    await app?.close();
    await jwks?.close();
    await h?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
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
