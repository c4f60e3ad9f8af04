import type { JsonWebKey } from 'node:crypto';
import { createHmac, createPublicKey } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JWTPayload } from 'jose';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import { H2_PREFACE_AND_SETTINGS } from '../helpers/raw-socket.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, attack catalogue: JWTs against an inbound route that requires
 * one (RequestAuthentication from a local IdP's JWKS, RS256; an
 * AuthorizationPolicy admitting the request principal ISSUER/alice). The rule
 * reads tokens from `Authorization: Bearer` only. Each refused token gets its
 * status and reason (header and JSON body), one access-log line with that
 * reason, meshgate_requests_total{reason} up by one; the app and every other
 * server (the IdP aside, which serves the keys) see nothing; and no log line
 * ever holds the token.
 */

const ISSUER = 'https://idp.test';
const ALICE = { iss: ISSUER, aud: 'orders', sub: 'alice' };
const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** HPACK (RFC 7541 §5.1) integer with an n-bit prefix. */
function hpackInt(n: number, prefixBits: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (n < max) return [n];
  const out = [max];
  for (n -= max; n >= 128; n = Math.floor(n / 128)) out.push((n % 128) + 128);
  out.push(n);
  return out;
}

/** One HTTP/2 request whose header fields are sent exactly as listed (node's client refuses a repeated Authorization). */
function rawH2Request(port: number, fields: Array<[string, string]>): Promise<number> {
  // Literal header fields without indexing, literal names, no Huffman coding (RFC 7541 §6.2.2).
  const block = Buffer.concat(fields.flatMap(([name, value]) => [Buffer.from([0, ...hpackInt(name.length, 7)]), Buffer.from(name), Buffer.from(hpackInt(value.length, 7)), Buffer.from(value)]));
  const frame = Buffer.from([block.length >> 16, (block.length >> 8) & 255, block.length & 255, 1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM|END_HEADERS, stream 1
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.concat([H2_PREFACE_AND_SETTINGS, frame, block])));
    let got = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      for (let at = 0; at + 9 <= got.length; at += 9 + got.readUIntBE(at, 3)) {
        if (got[at + 3] !== 1 || got.readUInt32BE(at + 5) !== 1 || at + 10 > got.length) continue;
        socket.destroy();
        // The first field of a response is :status; nghttp2 sends the ones in the static table indexed (RFC 7541 Appendix A).
        const indexed: Record<number, number> = { 136: 200, 140: 400, 141: 404 };
        resolve(indexed[got[at + 9]!] ?? -1);
        return;
      }
    });
    socket.on('error', reject);
  });
}

interface Reply {
  readonly status: number;
  readonly reason: string | undefined;
  readonly body: Record<string, unknown>;
}

describe('JWT attack tokens against a route that requires a token', () => {
  let idp: TestIdp;
  let app: TestServer;
  let attacker: TestServer;
  let sc: TestSidecar;
  let stateDir: string;
  let idpPublicPem: string;

  const now = () => Math.floor(Date.now() / 1000);
  const token = (claims: JWTPayload = {}): Promise<string> => idp.sign({ ...ALICE, iat: now(), exp: now() + 300, ...claims });
  /** A token signed with a key of the attacker's, with the IdP's kid, issuer and audience. */
  const forged = async (header: Record<string, unknown>, claims: JWTPayload = {}): Promise<string> => {
    const { privateKey } = await generateKeyPair('RS256');
    return new SignJWT({ ...ALICE, iat: now(), exp: now() + 300, ...claims }).setProtectedHeader({ alg: 'RS256', kid: 'e2e', ...header }).sign(privateKey);
  };

  /** One HTTP/1.1 call to the inbound listener; header values given as arrays are sent as repeated fields. */
  const call = (target: string, headers: http.OutgoingHttpHeaders = {}): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: sc.inbound.port, path: target, headers: { host: 'orders', ...headers }, agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-meshgate-reason'] as string | undefined, body: JSON.parse(text) as Record<string, unknown> }));
      });
      req.on('error', reject);
      req.end();
    });

  beforeAll(async () => {
    idp = await startTestIdp({ alg: 'RS256' });
    const jwks = (await (await fetch(`${idp.url}/jwks`)).json()) as { keys: JsonWebKey[] };
    idpPublicPem = createPublicKey({ key: jwks.keys[0]!, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
    app = await startHttpServer(echoHandler('orders'));
    // Serves a key set of its own at any path: a verifier that followed jku or x5u would fetch it.
    const { publicKey } = await generateKeyPair('RS256');
    const attackerKeys = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'e2e', alg: 'RS256' }] });
    attacker = await startHttpServer((_req, res) => res.end(attackerKeys));
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-jwt-'));
    await writeSnapshot(stateDir, { service: 'orders' }, [
      policyDoc('RequestAuthentication', 'orders-users', {
        selector: { services: ['orders'] },
        jwtRules: [{ name: 'idp', issuer: ISSUER, jwksUri: `${idp.url}/jwks`, audiences: ['orders'], algorithms: ['RS256'], fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }] }],
      }),
      policyDoc('AuthorizationPolicy', 'orders-alice', {
        selector: { services: ['orders'] },
        action: 'ALLOW',
        rules: [{ name: 'alice', from: [{ requestPrincipals: [`${ISSUER}/alice`] }] }],
      }),
    ]);
    sc = await startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      inbound: { app: app.url },
      policy: { servers: ['127.0.0.1:1'], stateDir },
      // Room for a 20 KiB token to reach the verifier; 64 KiB still exceeds the head limit.
      limits: { maxHeaderSize: 32_768 },
    } as Parameters<typeof startTestSidecar>[0]);
  }, 30_000);

  afterAll(async () => {
    await sc?.drain(100);
    await app?.close();
    await attacker?.close();
    await idp?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it("the canary: alice's token is admitted and the app gets no Authorization header", async () => {
    const hits = app.hits();
    const reply = await call('/orders/1', { authorization: `Bearer ${await token()}` });
    expect(reply.status).toBe(200);
    expect(reply.body).toMatchObject({ url: '/orders/1' });
    expect((reply.body.headers as Record<string, string>).authorization).toBeUndefined();
    expect(app.hits()).toBe(hits + 1);
  });

  /** Each case builds its request: the target and headers, and the token that must never be logged. */
  type Attack = () => Promise<{ target?: string; headers: http.OutgoingHttpHeaders; secret?: string }>;
  const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` }, secret: t });
  const cases: Array<[string, number, string, Attack, RegExp?]> = [
    ['alg none, no signature', 401, 'authn.jwt_algorithm', async () => bearer(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...ALICE, exp: now() + 300 })}.`)],
    [
      'HS256 keyed with the IdP public key (algorithm confusion)',
      401,
      'authn.jwt_algorithm',
      async () => {
        const signingInput = `${b64({ alg: 'HS256', typ: 'JWT', kid: 'e2e' })}.${b64({ ...ALICE, exp: now() + 300 })}`;
        return bearer(`${signingInput}.${createHmac('sha256', idpPublicPem).update(signingInput).digest('base64url')}`);
      },
    ],
    ['expired (beyond the 30 s clock skew)', 401, 'authn.jwt_expired', async () => bearer(await token({ iat: now() - 600, exp: now() - 120 }))],
    ['nbf in the future', 401, 'authn.jwt_not_yet_valid', async () => bearer(await token({ nbf: now() + 600 }))],
    ['another issuer', 401, 'authn.jwt_issuer', async () => bearer(await token({ iss: 'https://evil.example' }))],
    ['another audience', 401, 'authn.jwt_audience', async () => bearer(await token({ aud: 'billing' }))],
    ['no exp claim', 401, 'authn.jwt_invalid', async () => bearer(await idp.sign({ ...ALICE, iat: now() }))],
    ['an unknown kid', 401, 'authn.jwt_invalid', async () => bearer(await forged({ kid: 'rotated-out' })), /kid/],
    [
      'a tampered payload (sub changed, signature kept)',
      401,
      'authn.jwt_invalid',
      async () => {
        const [header, , signature] = (await token({ sub: 'mallory' })).split('.');
        return bearer(`${header}.${b64({ ...ALICE, iat: now(), exp: now() + 300 })}.${signature}`);
      },
      /signature/,
    ],
    [
      'a crit header the verifier does not understand (signed by the IdP key)',
      401,
      'authn.jwt_invalid',
      async () => bearer(await idp.sign({ ...ALICE, iat: now(), exp: now() + 300 }, { crit: ['x-must-understand'], 'x-must-understand': true })),
      /crit/,
    ],
    [
      'jku and x5u pointing at another server (never fetched)',
      401,
      'authn.jwt_invalid',
      async () => bearer(await forged({ jku: `${attacker.url}/jwks`, x5u: `${attacker.url}/cert.pem` })),
      /signature/,
    ],
    ['a 20 KiB token (over the 16 KiB token limit)', 401, 'authn.jwt_invalid', async () => bearer(await token({ pad: 'x'.repeat(20_480) })), /longer than/],
    ['a 64 KiB token (over the request head limit)', 431, 'request.headers_too_large', async () => bearer(await token({ pad: 'x'.repeat(65_536) }))],
    ['no token at all', 401, 'authn.missing_token', async () => ({ headers: {} })],
    [
      'the token in the query string (the rule reads the header only)',
      401,
      'authn.missing_token',
      async () => {
        const t = await token();
        return { target: `/orders/1?access_token=${t}`, headers: {}, secret: t };
      },
    ],
    [
      "two Authorization headers (alice's token first)",
      400,
      'request.malformed',
      async () => {
        const t = await token();
        return { headers: { authorization: [`Bearer ${t}`, 'Bearer garbage'] }, secret: t };
      },
    ],
    ['Bearer with garbage', 401, 'authn.jwt_invalid', async () => bearer('not-a-jwt')],
    // The header's value is trimmed to "Bearer": no "Bearer " prefix, so no token at all.
    ['Bearer with nothing after it', 401, 'authn.missing_token', async () => ({ headers: { authorization: 'Bearer ' } })],
    ['another scheme (Basic) carries no token', 401, 'authn.missing_token', async () => ({ headers: { authorization: `Basic ${b64('alice:secret')}` } })],
    ['a valid token of a principal the policy does not admit', 403, 'authz.denied', async () => bearer(await token({ sub: 'bob' }))],
  ];

  it.each(cases)('%s: %i %s, logged and counted once, nothing forwarded, token never logged', async (_case, status, reason, attack, text) => {
    const { target, headers, secret } = await attack();
    const watch = await watchRefusal(sc, [app, attacker]);
    const reply = await call(target ?? '/orders/1', headers);
    expect(reply.status).toBe(status);
    expect(reply.reason).toBe(reason);
    expect(reply.body).toMatchObject({ code: reason });
    if (text) expect(reply.body.reason).toMatch(text);
    const line = await watch.refused({ reason, status, direction: 'inbound' });
    expect(line.log).toBe('access');
    if (secret !== undefined) {
      const signature = secret.slice(secret.lastIndexOf('.') + 1);
      for (const l of watch.logsSince()) {
        const text = JSON.stringify(l);
        expect(text).not.toContain(secret);
        if (signature.length > 8) expect(text).not.toContain(signature);
      }
    }
  });

  it("HTTP/2, two Authorization fields (alice's token first): 400 request.malformed, never the first one silently", async () => {
    const t = await token();
    const watch = await watchRefusal(sc, [app, attacker]);
    const fields: Array<[string, string]> = [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/orders/1'],
      [':authority', 'orders'],
      ['authorization', `Bearer ${t}`],
      ['authorization', 'Bearer garbage'],
    ];
    expect(await rawH2Request(sc.inbound.port, fields)).toBe(400);
    const line = await watch.refused({ reason: 'request.malformed', status: 400, direction: 'inbound' });
    expect(line.protocol).toBe('HTTP/2');
    for (const l of watch.logsSince()) expect(JSON.stringify(l)).not.toContain(t.slice(t.lastIndexOf('.') + 1));
  });

  it('the attacker server named in jku/x5u was never contacted', () => {
    expect(attacker.hits()).toBe(0);
  });
});
