import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendCalls, ordersUsers, startMesh } from '../helpers/mesh.ts';

/*
 * The tenant example of deploy/examples/filters end to end: frontend ->
 * mTLS -> orders, the token verified by orders' RequestAuthentication, then
 * the check (stage after-authn) compares its `tenant` claim with the path;
 * the Filter document and its source file pushed by a real policy server.
 */

const EXAMPLES = path.resolve(import.meta.dirname, '../../deploy/examples/filters');
const ISSUER = 'https://idp.test';

describe('the tenant example through two sidecars', () => {
  let mesh: Mesh;
  let idp: TestIdp;
  const token = (claims: JWTPayload): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    return idp.sign({ iss: ISSUER, aud: 'orders', iat: now, exp: now + 300, ...claims });
  };

  beforeAll(async () => {
    idp = await startTestIdp();
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allowFrontendCalls, 'shop/authn.yaml': ordersUsers(ISSUER, `${idp.url}/jwks`) },
      prepare: async (h) => {
        await h.write('tenant.ts', await readFile(path.join(EXAMPLES, 'tenant.ts'), 'utf8'));
        await h.write('shop/tenant.yaml', await readFile(path.join(EXAMPLES, 'tenant.yaml'), 'utf8'));
      },
      // The RequestAuthentication requires a token on every call, the start's own included.
      ready: { headers: { authorization: `Bearer ${await token({ sub: 'alice' })}` } },
    });
  }, 60_000);
  afterAll(async () => {
    await mesh?.close();
    await idp?.close();
  });

  it("lets a caller reach its own tenant's paths and denies another tenant's, naming the document and the check's code", async () => {
    const acme = { authorization: `Bearer ${await token({ sub: 'alice', tenant: 'acme' })}` };
    expect((await mesh.call('/tenants/acme/orders', { headers: acme })).status).toBe(200);
    const other = await mesh.call('/tenants/globex/orders', { headers: acme });
    expect({ status: other.status, reason: other.headers['x-meshgate-reason'], body: JSON.parse(other.text) }).toMatchObject({
      status: 403,
      reason: 'filter.denied',
      body: { rule: 'shop/tenant-isolation#tenant_mismatch' },
    });
    const noTenant = await mesh.call('/tenants/acme/orders', { headers: { authorization: `Bearer ${await token({ sub: 'bob' })}` } });
    expect(JSON.parse(noTenant.text)).toMatchObject({ rule: 'shop/tenant-isolation#tenant_unknown' });
    expect((await mesh.call('/orders/1', { headers: acme })).status).toBe(200); // other paths are not the check's
  });
});
