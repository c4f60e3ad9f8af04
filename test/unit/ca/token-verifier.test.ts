import type { KeyObject } from 'node:crypto';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TokenVerifier } from '../../../src/ca/token-verifier.ts';
import { createTokenVerifier } from '../../../src/ca/token-verifier.ts';
import type { CaTokensConfig } from '../../../src/config/ca-schema.ts';
import { caConfigSchema } from '../../../src/config/ca-schema.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

const clock = createFakeClock(1_800_000_000_000);
const NOW = Math.floor(clock.now() / 1000);
const SA = { sub: 'system:serviceaccount:shop:web' };
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });

let dir: string;

function tokensConfig(tokens: Record<string, unknown>): CaTokensConfig {
  return caConfigSchema.parse({
    trustDomain: 'cluster.local',
    signing: { certFile: 'x', keyFile: 'x' },
    trustBundle: { files: ['x'] },
    tokens: { issuers: ['meshgate', 'https://kubernetes.default.svc'], ...tokens },
  }).tokens;
}

function verifier(tokens: Record<string, unknown>): Promise<TokenVerifier> {
  return createTokenVerifier(tokensConfig(tokens), { clock, trustDomain: 'cluster.local', resolvePath: (f) => path.resolve(dir, f), configFile: 'ca.yaml' });
}

function jwt(claims: Record<string, unknown> = SA, header: Record<string, unknown> = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', ...header })
    .setIssuer('meshgate')
    .setAudience('meshgate-ca')
    .setIssuedAt(NOW)
    .setExpirationTime(NOW + 600);
}

describe('createTokenVerifier', () => {
  let pem: TokenVerifier;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-tokens-'));
    await writeFile(path.join(dir, 'ec.pub.pem'), ec.publicKey.export({ format: 'pem', type: 'spki' }));
    const jwks = {
      keys: [
        { ...(await exportJWK(other.publicKey)), kid: 'other' },
        { ...(await exportJWK(rsa.publicKey)), kid: 'k8s', alg: 'RS256', use: 'sig' },
      ],
    };
    await writeFile(path.join(dir, 'jwks.json'), JSON.stringify(jwks));
    pem = await verifier({ publicKeyFile: 'ec.pub.pem' });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts a valid ES256 token and maps it to a SPIFFE ID', async () => {
    expect(await pem.verify(await jwt().sign(ec.privateKey))).toEqual({
      ok: true,
      issuer: 'meshgate',
      namespace: 'shop',
      serviceAccount: 'web',
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/web',
    });
  });

  it('accepts any configured audience among several in the token', async () => {
    const token = await jwt().setAudience(['elsewhere', 'meshgate-ca']).sign(ec.privateKey);
    expect(await pem.verify(token)).toMatchObject({ ok: true });
  });

  it('tolerates clock skew up to tokens.clockSkew, and no more', async () => {
    expect(
      await pem.verify(
        await jwt()
          .setExpirationTime(NOW - 20)
          .sign(ec.privateKey),
      ),
    ).toMatchObject({ ok: true });
    expect(
      await pem.verify(
        await jwt()
          .setExpirationTime(NOW - 40)
          .sign(ec.privateKey),
      ),
    ).toMatchObject({ ok: false, reason: 'ca.token_expired' });
    expect(
      await pem.verify(
        await jwt()
          .setNotBefore(NOW + 20)
          .sign(ec.privateKey),
      ),
    ).toMatchObject({ ok: true });
    expect(
      await pem.verify(
        await jwt()
          .setNotBefore(NOW + 40)
          .sign(ec.privateKey),
      ),
    ).toMatchObject({ ok: false, reason: 'ca.token_not_yet_valid' });
  });

  it('reads time from the injected clock', async () => {
    const token = await jwt().sign(ec.privateKey);
    clock.advance(11 * 60_000);
    try {
      expect(await pem.verify(token)).toMatchObject({ ok: false, reason: 'ca.token_expired' });
    } finally {
      clock.advance(-11 * 60_000);
    }
  });

  it.each<[string, () => Promise<string>, string]>([
    ['a token signed by another key', () => jwt().sign(other.privateKey), 'ca.token_signature'],
    ['RS256 against an EC key', () => jwt(SA, { alg: 'RS256' }).sign(rsa.privateKey), 'ca.token_signature'],
    [
      'an algorithm outside the allow-list',
      () =>
        new SignJWT(SA)
          .setProtectedHeader({ alg: 'ES384' })
          .setIssuer('meshgate')
          .setAudience('meshgate-ca')
          .setExpirationTime(NOW + 60)
          .sign(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey),
      'ca.token_algorithm',
    ],
    ['HS256 keyed with the PEM public key', () => jwt(SA, { alg: 'HS256' }).sign(new Uint8Array(Buffer.from(ec.publicKey.export({ format: 'pem', type: 'spki' })))), 'ca.token_algorithm'],
    [
      'a missing iss',
      () =>
        new SignJWT(SA)
          .setProtectedHeader({ alg: 'ES256' })
          .setAudience('meshgate-ca')
          .setExpirationTime(NOW + 60)
          .sign(ec.privateKey),
      'ca.token_claims',
    ],
    [
      'a missing aud',
      () =>
        new SignJWT(SA)
          .setProtectedHeader({ alg: 'ES256' })
          .setIssuer('meshgate')
          .setExpirationTime(NOW + 60)
          .sign(ec.privateKey),
      'ca.token_claims',
    ],
    ['a wrong issuer', () => jwt().setIssuer('evil').sign(ec.privateKey), 'ca.token_issuer'],
    ['a wrong audience', () => jwt().setAudience('evil').sign(ec.privateKey), 'ca.token_audience'],
    ['a token with no service account', () => jwt({ sub: 'alice' }).sign(ec.privateKey), 'ca.token_claims'],
    ['three dots', async () => 'a.b.c', 'ca.token_malformed'],
    ['an oversized token', async () => `${'a'.repeat(20_000)}.b.c`, 'ca.token_malformed'],
  ])('refuses %s', async (_name, make, reason) => {
    expect(await pem.verify(await make())).toMatchObject({ ok: false, reason });
  });

  it('never follows jku or x5u from the token', async () => {
    const requests: string[] = [];
    const server = http.createServer((req, res) => {
      requests.push(req.url ?? '');
      res.end(JSON.stringify({ keys: [] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const token = await jwt(SA, { jku: `${base}/jwks`, x5u: `${base}/cert`, kid: 'attacker' }).sign(other.privateKey);
      expect(await pem.verify(token)).toMatchObject({ ok: false, reason: 'ca.token_signature' });
      expect(requests).toEqual([]);
    } finally {
      server.close();
    }
  });

  it('verifies Kubernetes-style RS256 tokens from a jwksFile, choosing the key by kid', async () => {
    const jwks = await verifier({ jwksFile: 'jwks.json' });
    const k8s = { 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'billing' } }, sub: 'system:serviceaccount:payments:billing' };
    const token = await new SignJWT(k8s)
      .setProtectedHeader({ alg: 'RS256', kid: 'k8s' })
      .setIssuer('https://kubernetes.default.svc')
      .setAudience('meshgate-ca')
      .setExpirationTime(NOW + 600)
      .sign(rsa.privateKey as KeyObject);
    expect(await jwks.verify(token)).toMatchObject({ ok: true, spiffeId: 'spiffe://cluster.local/ns/payments/sa/billing', issuer: 'https://kubernetes.default.svc' });
    expect(await jwks.verify(await jwt(SA, { kid: 'other' }).sign(other.privateKey))).toMatchObject({ ok: true });
    expect(await jwks.verify(await jwt(SA, { kid: 'k8s' }).sign(other.privateKey))).toMatchObject({ ok: false, reason: 'ca.token_signature' });
  });

  it('fails start-up with one line for an unreadable or invalid key file', async () => {
    await expect(verifier({ publicKeyFile: 'missing.pem' })).rejects.toThrow('ca.yaml: tokens.publicKeyFile: cannot read missing.pem (ENOENT)');
    await writeFile(path.join(dir, 'junk.pem'), 'junk');
    await expect(verifier({ publicKeyFile: 'junk.pem' })).rejects.toThrow(/^ca\.yaml: tokens\.publicKeyFile: not a PEM public key/);
    await expect(verifier({ jwksFile: 'junk.pem' })).rejects.toThrow(/^ca\.yaml: tokens\.jwksFile: not a JWKS/);
  });
});
