import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AdminApiConfigInput } from '../../../src/config/admin-api-schema.ts';
import { adminApiConfigSchema } from '../../../src/config/admin-api-schema.ts';
import { ConfigError } from '../../../src/config/load.ts';
import type { AdminAuthenticator } from '../../../src/policy-server/admin-auth.ts';
import { createAdminAuthenticator, peerSpiffeId } from '../../../src/policy-server/admin-auth.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

const clock = createFakeClock(1_800_000_000_000);
const NOW = Math.floor(clock.now() / 1000);
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const SPIFFE = 'spiffe://cluster.local/ns/platform/sa/ops';

let dir: string;

function authenticator(input: AdminApiConfigInput): Promise<AdminAuthenticator> {
  const config = adminApiConfigSchema.parse(input);
  return createAdminAuthenticator(config, { clock, resolvePath: (f) => path.resolve(dir, f), configFile: 'policy-server.yaml' });
}

const JWT = { issuers: ['https://login.example.com'], audiences: ['meshgate-policy-admin'], publicKeyFile: 'admin.pub.pem' };

function token(claims: Record<string, unknown> = { sub: 'alice@example.com' }, header: { alg: string; kid?: string } = { alg: 'ES256' }) {
  return new SignJWT(claims)
    .setProtectedHeader(header)
    .setIssuer('https://login.example.com')
    .setAudience('meshgate-policy-admin')
    .setIssuedAt(NOW)
    .setExpirationTime(NOW + 600);
}

/** A request as the handler sees it: headers, and a socket that may be a TLS socket. */
function request(headers: Record<string, string>, socket: Partial<Socket> & Record<string, unknown> = {}): IncomingMessage {
  return { headers, socket } as unknown as IncomingMessage;
}

function tlsSocket(opts: { authorized: boolean; san?: string; ca?: boolean; error?: string; none?: boolean }) {
  return {
    authorized: opts.authorized,
    authorizationError: opts.error,
    getPeerCertificate: () => (opts.none ? {} : { subjectaltname: opts.san, ca: opts.ca ?? false, subject: {} }),
  };
}

/** An unsigned token (`alg: none`), built by hand: jose refuses to make one. */
function unsecured(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}

describe('admin authentication', () => {
  let auth: AdminAuthenticator;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-admin-auth-'));
    await writeFile(path.join(dir, 'admin.pub.pem'), ec.publicKey.export({ format: 'pem', type: 'spki' }));
    await writeFile(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'idp', alg: 'RS256', use: 'sig' }] }));
    auth = await authenticator({ jwt: JWT });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('mTLS', () => {
    it('takes the subject from a verified client certificate', async () => {
      const result = await auth.authenticate(request({}, tlsSocket({ authorized: true, san: `URI:${SPIFFE}, DNS:ops.local` })));
      expect(result).toEqual({ ok: true, subject: SPIFFE, via: 'mtls' });
    });

    it('refuses a certificate that did not verify, and says why', async () => {
      const result = await auth.authenticate(request({}, tlsSocket({ authorized: false, san: `URI:${SPIFFE}`, error: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })));
      expect(result).toEqual({ ok: false, reason: 'client certificate not verified (UNABLE_TO_VERIFY_LEAF_SIGNATURE)' });
    });

    it('refuses a CA certificate and a certificate without exactly one SPIFFE ID', async () => {
      expect(peerSpiffeId(tlsSocket({ authorized: true, san: `URI:${SPIFFE}`, ca: true }) as never)).toMatchObject({ ok: false, reason: 'client certificate is a CA certificate' });
      expect(peerSpiffeId(tlsSocket({ authorized: true, san: 'DNS:ops.local' }) as never)).toMatchObject({ ok: false });
      expect(peerSpiffeId(tlsSocket({ authorized: true, san: `URI:${SPIFFE}, URI:spiffe://cluster.local/ns/x/sa/y` }) as never)).toMatchObject({ ok: false });
    });

    it('keeps to the configured trust domains', () => {
      const socket = tlsSocket({ authorized: true, san: 'URI:spiffe://other.example/ns/platform/sa/ops' }) as never;
      expect(peerSpiffeId(socket, ['cluster.local'])).toEqual({ ok: false, reason: 'client certificate trust domain other.example not accepted' });
      expect(peerSpiffeId(socket)).toEqual({ ok: true, spiffeId: 'spiffe://other.example/ns/platform/sa/ops' });
    });

    it('sees no certificate on plain HTTP or when none was sent', async () => {
      expect(peerSpiffeId({} as never)).toBeUndefined();
      expect(peerSpiffeId(tlsSocket({ authorized: false, none: true }) as never)).toBeUndefined();
      expect(await auth.authenticate(request({}, tlsSocket({ authorized: false, none: true })))).toEqual({
        ok: false,
        reason: 'no credentials: present a client certificate or a bearer token',
      });
    });

    it('ignores certificates when mtls is disabled', async () => {
      const jwtOnly = await authenticator({ jwt: JWT, mtls: { enabled: false } });
      expect(await jwtOnly.authenticate(request({}, tlsSocket({ authorized: true, san: `URI:${SPIFFE}` })))).toEqual({ ok: false, reason: 'no credentials: present a bearer token' });
    });
  });

  describe('bearer JWT', () => {
    it('accepts a valid token; the subject is `sub`', async () => {
      const result = await auth.authenticate(request({ authorization: `Bearer ${await token().sign(ec.privateKey)}` }));
      expect(result).toEqual({ ok: true, subject: 'alice@example.com', via: 'jwt' });
    });

    it('uses the configured subject claim', async () => {
      const byEmail = await authenticator({ jwt: { ...JWT, subjectClaim: 'email' } });
      const good = await token({ sub: '1234', email: 'alice@example.com' }).sign(ec.privateKey);
      expect(await byEmail.authenticate(request({ authorization: `Bearer ${good}` }))).toEqual({ ok: true, subject: 'alice@example.com', via: 'jwt' });
      const missing = await token({ sub: '1234' }).sign(ec.privateKey);
      expect(await byEmail.authenticate(request({ authorization: `Bearer ${missing}` }))).toEqual({ ok: false, reason: 'token has no string "email" claim' });
    });

    it('refuses an expired token, beyond the clock skew', async () => {
      const withinSkew = await token()
        .setExpirationTime(NOW - 20)
        .sign(ec.privateKey);
      expect(await auth.authenticate(request({ authorization: `Bearer ${withinSkew}` }))).toMatchObject({ ok: true });
      const expired = await token()
        .setExpirationTime(NOW - 60)
        .sign(ec.privateKey);
      expect(await auth.authenticate(request({ authorization: `Bearer ${expired}` }))).toEqual({ ok: false, reason: 'token expired' });
    });

    it('refuses a token for another audience or from another issuer', async () => {
      const aud = await token().setAudience('meshgate-ca').sign(ec.privateKey);
      expect(await auth.authenticate(request({ authorization: `Bearer ${aud}` }))).toEqual({ ok: false, reason: 'token audience not accepted' });
      const iss = await token().setIssuer('https://evil.example.com').sign(ec.privateKey);
      expect(await auth.authenticate(request({ authorization: `Bearer ${iss}` }))).toEqual({ ok: false, reason: 'token issuer not accepted' });
    });

    it('refuses alg none', async () => {
      const none = unsecured({ sub: 'alice@example.com', iss: 'https://login.example.com', aud: 'meshgate-policy-admin', exp: NOW + 600 });
      expect(await auth.authenticate(request({ authorization: `Bearer ${none}` }))).toEqual({ ok: false, reason: 'token algorithm "none" not allowed (allowed: ES256, RS256)' });
    });

    it('refuses HS256, even keyed with the public key as the secret', async () => {
      const secret = Buffer.from(ec.publicKey.export({ format: 'pem', type: 'spki' }) as string);
      const hs = await new SignJWT({ sub: 'alice@example.com' })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer('https://login.example.com')
        .setAudience('meshgate-policy-admin')
        .setExpirationTime(NOW + 600)
        .sign(secret);
      expect(await auth.authenticate(request({ authorization: `Bearer ${hs}` }))).toEqual({ ok: false, reason: 'token algorithm "HS256" not allowed (allowed: ES256, RS256)' });
    });

    it('refuses a token signed by another key', async () => {
      const forged = await token().sign(stranger.privateKey);
      expect(await auth.authenticate(request({ authorization: `Bearer ${forged}` }))).toEqual({ ok: false, reason: 'token signature does not verify with a configured key' });
    });

    it('verifies against a JWKS file', async () => {
      const jwks = await authenticator({ jwt: { ...JWT, publicKeyFile: undefined, jwksFile: 'jwks.json' } });
      const good = await token(undefined, { alg: 'RS256', kid: 'idp' }).sign(rsa.privateKey);
      expect(await jwks.authenticate(request({ authorization: `Bearer ${good}` }))).toMatchObject({ ok: true, subject: 'alice@example.com' });
    });

    it('judges a request with an Authorization header by its token alone', async () => {
      const expired = await token()
        .setExpirationTime(NOW - 600)
        .sign(ec.privateKey);
      const withCert = tlsSocket({ authorized: true, san: `URI:${SPIFFE}` });
      expect(await auth.authenticate(request({ authorization: `Bearer ${expired}` }, withCert))).toEqual({ ok: false, reason: 'token expired' });
      expect(await auth.authenticate(request({ authorization: 'Basic YWxpY2U6c2VjcmV0' }, withCert))).toEqual({ ok: false, reason: 'Authorization header is not "Bearer <token>"' });
    });

    it('refuses bearer tokens when no JWT verification is configured', async () => {
      const mtlsOnly = await authenticator({});
      const good = await token().sign(ec.privateKey);
      expect(await mtlsOnly.authenticate(request({ authorization: `Bearer ${good}` }))).toEqual({ ok: false, reason: 'bearer tokens are not accepted (adminApi.jwt is not configured)' });
    });

    it('never echoes the token in a reason', async () => {
      const garbage = 'not-a-jwt-but-a-secret-value';
      const result = await auth.authenticate(request({ authorization: `Bearer ${garbage}` }));
      expect(result).toEqual({ ok: false, reason: 'token is not a JWT (compact JWS)' });
      expect(JSON.stringify(result)).not.toContain(garbage);
    });
  });

  it('fails at start-up with a one-line error for an unreadable key file', async () => {
    await expect(authenticator({ jwt: { ...JWT, publicKeyFile: 'missing.pem' } })).rejects.toThrow(new ConfigError('policy-server.yaml: adminApi.jwt.publicKeyFile: cannot read missing.pem (ENOENT)'));
  });
});
