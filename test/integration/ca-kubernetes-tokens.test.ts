import { randomUUID, X509Certificate } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearerMetadata, caRefusalReason } from '../../src/identity/ca-api.ts';
import { createCsr, generateKeyPair } from '../../src/identity/x509.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';

/*
 * Bootstrap tokens in Kubernetes: the CA takes the pod's projected
 * service-account token (audience meshgate-ca) as it is, verified against the
 * cluster's keys as the API server serves them (HTTPS with the cluster's own
 * CA, to an authenticated caller: the CA's own service-account token), so no
 * token is minted by hand.
 */

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const CA_OWN_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.the-ca-own-service-account-token.sig';

/** The claims of a real projected token (kubectl create token / a kubelet projection), for pod `pod` of shop/orders. */
function projectedClaims(now: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const sec = Math.floor(now / 1000);
  return {
    aud: ['meshgate-ca'],
    exp: sec + 600,
    iat: sec,
    iss: ISSUER,
    jti: randomUUID(),
    'kubernetes.io': {
      namespace: 'shop',
      node: { name: 'kind-worker', uid: randomUUID() },
      pod: { name: 'orders-7d4b9c8f6d-x2x9q', uid: randomUUID() },
      serviceaccount: { name: 'orders', uid: randomUUID() },
      warnafter: sec + 480,
    },
    nbf: sec,
    sub: 'system:serviceaccount:shop:orders',
    ...overrides,
  };
}

async function csr(): Promise<string> {
  return createCsr((await generateKeyPair('ecdsa-p256')) as never, 'ecdsa-p256');
}

async function reasonOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return caRefusalReason(err as grpc.ServiceError) ?? `no reason: ${(err as Error).message}`;
  }
  throw new Error('expected a refusal');
}

describe('meshgate ca with Kubernetes projected service-account tokens', () => {
  let idp: TestIdp;
  let t: TestCa;
  let dir: string;

  beforeAll(async () => {
    idp = await startTestIdp({ alg: 'RS256', kid: 'Xk3h-cluster-key', tls: true, bearer: CA_OWN_TOKEN });
    dir = await createCaMaterialDir();
    await writeFile(path.join(dir, 'cluster-ca.crt'), idp.caPem!);
    await writeFile(path.join(dir, 'ca-sa-token'), `${CA_OWN_TOKEN}\n`);
    t = await startTestCa({
      dir,
      overrides: {
        tokens: {
          issuers: [ISSUER],
          audiences: ['meshgate-ca'],
          jwksUri: `${idp.url}/openid/v1/jwks`,
          jwksCaFile: 'cluster-ca.crt',
          jwksTokenFile: 'ca-sa-token',
          algorithms: ['RS256'],
        },
      },
    });
  });
  afterAll(async () => {
    await t?.close();
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('issues spiffe://<td>/ns/<namespace>/sa/<service account> from the kubernetes.io claims', async () => {
    const token = await idp.sign(projectedClaims(t.clock.now()));
    const res = await t.client().sign({ csrPem: await csr() }, bearerMetadata(token));
    expect(new X509Certificate(res.certChainPem[0]!).subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/orders');
    const [record] = (await t.audit()).filter((r) => r.event === 'issued');
    expect(record).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders', proof: 'token' });
  });

  it.each([
    ['another audience (the default API audience)', { aud: ['https://kubernetes.default.svc.cluster.local'] }, 'ca.token_audience'],
    ['another issuer', { iss: 'https://oidc.eks.example.com/id/ABC' }, 'ca.token_issuer'],
    ['an expired token', { exp: 1_000_000, nbf: 999_000, iat: 999_000 }, 'ca.token_expired'],
    ['sub and kubernetes.io naming different accounts', { sub: 'system:serviceaccount:kube-system:admin' }, 'ca.token_claims'],
  ])('refuses %s', async (_name, overrides, reason) => {
    const token = await idp.sign(projectedClaims(t.clock.now(), overrides));
    expect(await reasonOf(t.client().sign({ csrPem: await csr() }, bearerMetadata(token)))).toBe(reason);
  });

  it("fails closed (keys unavailable) when the API server refuses the CA's own token", async () => {
    const other = await startTestIdp({ alg: 'RS256', tls: true, bearer: 'a-token-the-ca-does-not-have' });
    const otherDir = await createCaMaterialDir();
    await writeFile(path.join(otherDir, 'cluster-ca.crt'), other.caPem!);
    await writeFile(path.join(otherDir, 'ca-sa-token'), CA_OWN_TOKEN);
    const ca = await startTestCa({
      dir: otherDir,
      overrides: { tokens: { issuers: [ISSUER], jwksUri: `${other.url}/openid/v1/jwks`, jwksCaFile: 'cluster-ca.crt', jwksTokenFile: 'ca-sa-token', algorithms: ['RS256'] } },
    });
    try {
      const token = await other.sign(projectedClaims(ca.clock.now()));
      expect(await reasonOf(ca.client().sign({ csrPem: await csr() }, bearerMetadata(token)))).toBe('ca.token_keys_unavailable');
      expect(other.fetches()).toBeGreaterThan(0);
    } finally {
      await ca.close();
      await other.close();
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it("fails closed when the JWKS server's certificate is not from the configured CA", async () => {
    const otherDir = await createCaMaterialDir();
    const stranger = await startTestIdp({ alg: 'RS256', tls: true });
    await writeFile(path.join(otherDir, 'cluster-ca.crt'), idp.caPem!); // the cluster CA, but the server is another one
    const ca = await startTestCa({
      dir: otherDir,
      overrides: { tokens: { issuers: [ISSUER], jwksUri: `${stranger.url}/openid/v1/jwks`, jwksCaFile: 'cluster-ca.crt', algorithms: ['RS256'] } },
    });
    try {
      const token = await stranger.sign(projectedClaims(ca.clock.now()));
      expect(await reasonOf(ca.client().sign({ csrPem: await csr() }, bearerMetadata(token)))).toBe('ca.token_keys_unavailable');
      expect(stranger.fetches()).toBe(0); // the TLS handshake failed: the request never got there
    } finally {
      await ca.close();
      await stranger.close();
      await rm(otherDir, { recursive: true, force: true });
    }
  });
});
