import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createAuthnFilter } from '../../../../src/filters/authn/authn-filter.ts';
import { createAuthnRuntime } from '../../../../src/filters/authn/authn-runtime.ts';
import { createIntrospectionClient } from '../../../../src/filters/authn/introspection-client.ts';
import { createSecretFiles } from '../../../../src/filters/authn/secret-files.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import type { JsonServer } from './authn-fixtures.ts';
import { authnDoc, deadUrl, ISSUER, makeCall, makeKey, mint, startJsonServer } from './authn-fixtures.ts';

const NOW = 1_800_000_000;
const SECRET = 's3cret with spaces&=';
const RULE = 'shop/users#introspection';

/** What the fake authorization server knows: token -> RFC 7662 answer. */
const answers: Record<string, Record<string, unknown>> = {
  'opaque-alice': { active: true, sub: 'alice', iss: ISSUER, aud: 'orders', scope: 'orders.read', exp: NOW + 3600 },
  'opaque-soon': { active: true, sub: 'bob', exp: NOW + 10 },
  'opaque-revoked': { active: false },
  'opaque-expired': { active: true, sub: 'carol', exp: NOW - 120 },
  'opaque-future': { active: true, sub: 'dave', nbf: NOW + 600, exp: NOW + 3600 },
  'opaque-payments': { active: true, sub: 'erin', aud: ['payments'] },
  'opaque-foreign': { active: true, sub: 'frank', iss: 'https://other.example' },
  'opaque-client': { active: true, client_id: 'batch-job' },
  'opaque-stringly': { active: 'true', sub: 'mallory' },
};

let server: JsonServer;
let dir: string;
const seen: Array<{ authorization: string | undefined; contentType: string | undefined; body: string }> = [];

const introspect: http.RequestListener = (req, res) => {
  let body = '';
  req.on('data', (c: Buffer) => (body += c.toString()));
  req.on('end', () => {
    seen.push({ authorization: req.headers.authorization, contentType: req.headers['content-type'], body });
    const expected = `Basic ${Buffer.from(`meshgate-orders:${encodeURIComponent(SECRET).replace(/%20/g, '+')}`).toString('base64')}`;
    if (req.method !== 'POST' || req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"error":"invalid_client"}');
      return;
    }
    const token = new URLSearchParams(body).get('token') ?? '';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answers[token] ?? { active: false }));
  });
};

beforeAll(async () => {
  server = await startJsonServer(introspect);
  dir = await mkdtemp(path.join(tmpdir(), 'meshgate-authn-'));
  await writeFile(path.join(dir, 'idp-secret'), `${SECRET}\n`);
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  server.set(introspect);
});

function setup(extra = '', endpoint = `${server.url}/introspect`) {
  const clock = createFakeClock(NOW * 1000);
  const runtime = createAuthnRuntime({ random: () => 0.5, clock, secretsDir: dir });
  const spec = `introspection: { endpoint: "${endpoint}", clientId: meshgate-orders, clientSecretFile: idp-secret, issuer: "${ISSUER}", audiences: [orders]${extra} }`;
  return { clock, runtime, filter: createAuthnFilter([authnDoc(spec)], runtime) };
}

async function run(filter: ReturnType<typeof createAuthnFilter>, token: string | undefined): Promise<string> {
  const call = makeCall(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
  const v: Verdict = await filter.onRequest(call);
  return v.kind === 'continue' ? `continue ${call.annotations.auth?.principal ?? 'anonymous'}` : `${v.code}${v.rule ? ` ${v.rule}` : ''}`;
}

describe('authn filter: OAuth2 introspection', () => {
  const cases: Array<[string, string | undefined, string]> = [
    ['an active token', 'opaque-alice', `continue ${ISSUER}/alice`],
    ['an inactive (revoked) token', 'opaque-revoked', `authn.token_inactive ${RULE}`],
    ['a token the server does not know', 'opaque-unknown', `authn.token_inactive ${RULE}`],
    ['active, but exp is past', 'opaque-expired', `authn.token_inactive ${RULE}`],
    ['active, but nbf is ahead', 'opaque-future', `authn.token_inactive ${RULE}`],
    ['active, but for another audience', 'opaque-payments', `authn.token_inactive ${RULE}`],
    ['active, but from another issuer', 'opaque-foreign', `authn.token_inactive ${RULE}`],
    ['no sub: the client id is the subject, the configured issuer the issuer', 'opaque-client', `continue ${ISSUER}/batch-job`],
    ['"active": "true" (a string) is not active', 'opaque-stringly', `authn.introspection_unavailable ${RULE}`],
    ['no token', undefined, 'authn.missing_token shop/users#missing-token'],
  ];
  for (const [name, token, expected] of cases) {
    it(name, async () => {
      const { filter } = setup();
      expect(await run(filter, token)).toBe(expected);
    });
  }

  it('posts the token as a form with the client credentials (HTTP Basic, form-encoded)', async () => {
    seen.length = 0;
    const { filter } = setup();
    await run(filter, 'opaque-alice');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.contentType).toBe('application/x-www-form-urlencoded');
    expect(new URLSearchParams(seen[0]!.body).get('token')).toBe('opaque-alice');
    expect(new URLSearchParams(seen[0]!.body).get('token_type_hint')).toBe('access_token');
  });

  it('sets claims, strips the token and forwards the claims header', async () => {
    const { filter } = setup(', forwardClaimsHeader: x-auth-claims');
    const call = makeCall({ headers: { authorization: 'Bearer opaque-alice' } });
    expect((await filter.onRequest(call)).kind).toBe('continue');
    expect(call.annotations.auth?.claims).toMatchObject({ scope: 'orders.read', sub: 'alice' });
    expect(call.annotations.upstreamEdits!.removeHeaders).toEqual(['x-auth-claims', 'authorization']);
    expect(JSON.parse(Buffer.from(call.annotations.upstreamEdits!.setHeaders['x-auth-claims']!, 'base64url').toString())).toMatchObject({ sub: 'alice', active: true });
  });

  it('answers from the cache within cacheTtl, and asks again after it', async () => {
    const { filter, clock } = setup(', cacheTtl: 30s');
    const before = server.hits();
    for (let i = 0; i < 5; i++) expect(await run(filter, 'opaque-alice')).toBe(`continue ${ISSUER}/alice`);
    expect(server.hits() - before).toBe(1);
    clock.advance(31_000);
    expect(await run(filter, 'opaque-alice')).toBe(`continue ${ISSUER}/alice`);
    expect(server.hits() - before).toBe(2);
  });

  it('caches inactive answers too (a replayed dead token does not reach the endpoint every time)', async () => {
    const { filter } = setup();
    const before = server.hits();
    expect(await run(filter, 'opaque-revoked')).toBe(`authn.token_inactive ${RULE}`);
    expect(await run(filter, 'opaque-revoked')).toBe(`authn.token_inactive ${RULE}`);
    expect(server.hits() - before).toBe(1);
  });

  it("never caches past the token's exp", async () => {
    const { filter, clock } = setup(', cacheTtl: 10m');
    const before = server.hits();
    expect(await run(filter, 'opaque-soon')).toBe(`continue ${ISSUER}/bob`);
    clock.advance(5_000);
    expect(await run(filter, 'opaque-soon')).toBe(`continue ${ISSUER}/bob`);
    expect(server.hits() - before).toBe(1);
    clock.advance(6_000);
    // Past exp the cached answer is gone; the endpoint is asked, and the answer's exp (within the skew) still holds.
    expect(await run(filter, 'opaque-soon')).toBe(`continue ${ISSUER}/bob`);
    expect(server.hits() - before).toBe(2);
    clock.advance(60_000);
    expect(await run(filter, 'opaque-soon')).toBe(`authn.token_inactive ${RULE}`);
  });

  it('concurrent calls with one token share one request', async () => {
    const { filter } = setup();
    const before = server.hits();
    const results = await Promise.all(Array.from({ length: 8 }, () => run(filter, 'opaque-alice')));
    expect(new Set(results)).toEqual(new Set([`continue ${ISSUER}/alice`]));
    expect(server.hits() - before).toBe(1);
  });

  it('endpoint down: 503 authn.introspection_unavailable (fail closed), not cached', async () => {
    const { filter } = setup('', `${await deadUrl()}/introspect`);
    expect(await run(filter, 'opaque-alice')).toBe(`authn.introspection_unavailable ${RULE}`);
    server.set((_req, res) => {
      res.writeHead(500);
      res.end();
    });
    const live = setup();
    expect(await run(live.filter, 'opaque-alice')).toBe(`authn.introspection_unavailable ${RULE}`);
    server.set(introspect);
    expect(await run(live.filter, 'opaque-alice')).toBe(`continue ${ISSUER}/alice`);
  });

  it('an endpoint that does not answer in time: 503', async () => {
    server.set(() => {});
    const { filter } = setup(', timeout: 100ms');
    expect(await run(filter, 'opaque-alice')).toBe(`authn.introspection_unavailable ${RULE}`);
  });

  it('an answer that is not JSON: 503', async () => {
    server.set((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>login</html>');
    });
    const { filter } = setup();
    expect(await run(filter, 'opaque-alice')).toBe(`authn.introspection_unavailable ${RULE}`);
  });

  it('an unreadable client secret: 503, and the endpoint is not asked', async () => {
    const before = server.hits();
    const clock = createFakeClock(NOW * 1000);
    const filter = createAuthnFilter(
      [authnDoc(`introspection: { endpoint: "${server.url}/introspect", clientId: meshgate-orders, clientSecretFile: missing-secret }`)],
      createAuthnRuntime({ random: () => 0.5, clock, secretsDir: dir }),
    );
    expect(await run(filter, 'opaque-alice')).toBe(`authn.introspection_unavailable ${RULE}`);
    expect(server.hits()).toBe(before);
  });

  it('a JWT of an issuer no rule names goes to introspection; a known issuer to its rule', async () => {
    const key = await makeKey('k1');
    const clock = createFakeClock(NOW * 1000);
    const filter = createAuthnFilter(
      [
        authnDoc(
          `jwtRules: [{ name: idp, issuer: "https://jwt.example", jwks: { keys: [${JSON.stringify(key.publicJwk)}] } }]\nintrospection: { endpoint: "${server.url}/introspect", clientId: meshgate-orders, clientSecretFile: idp-secret }`,
        ),
      ],
      createAuthnRuntime({ random: () => 0.5, clock, secretsDir: dir }),
    );
    const before = server.hits();
    expect(await run(filter, await mint({ key, now: NOW, iss: 'https://jwt.example' }))).toBe('continue https://jwt.example/alice');
    expect(server.hits()).toBe(before);
    expect(await run(filter, await mint({ key, now: NOW, iss: 'https://unknown.example' }))).toBe(`authn.token_inactive ${RULE}`);
    expect(server.hits()).toBe(before + 1);
  });
});

describe('introspection client cache', () => {
  it('is bounded: the least recently used answer goes first', async () => {
    const clock = createFakeClock(NOW * 1000);
    const client = createIntrospectionClient(
      { endpoint: `${server.url}/introspect`, clientId: 'meshgate-orders', clientSecretFile: 'idp-secret', cacheTtlMs: 600_000, cacheSize: 2, timeoutMs: 2_000 },
      { clock, secrets: createSecretFiles(dir, { clock }) },
    );
    const before = server.hits();
    await client.introspect('opaque-alice');
    await client.introspect('opaque-revoked');
    await client.introspect('opaque-alice');
    await client.introspect('opaque-client');
    expect(client.stats().cached).toBe(2);
    expect(server.hits() - before).toBe(3);
    await client.introspect('opaque-alice');
    expect(server.hits() - before).toBe(3);
    await client.introspect('opaque-revoked');
    expect(server.hits() - before).toBe(4);
  });
});

describe('secret files', () => {
  it('reads names in the folder only, without the trailing newline', async () => {
    const clock = createFakeClock(NOW * 1000);
    const secrets = createSecretFiles(dir, { clock });
    expect(await secrets('idp-secret')).toBe(SECRET);
    for (const name of ['../etc/passwd', '/etc/passwd', 'a/b', '..', '.hidden']) expect(await secrets(name)).toBeUndefined();
  });

  it('keeps the last good value when a re-read fails, and picks up a rotated one', async () => {
    const clock = createFakeClock(NOW * 1000);
    const file = path.join(dir, 'rotating');
    await writeFile(file, 'one');
    const secrets = createSecretFiles(dir, { clock, refreshMs: 1_000 });
    expect(await secrets('rotating')).toBe('one');
    await writeFile(file, 'two');
    expect(await secrets('rotating')).toBe('one');
    clock.advance(1_000);
    expect(await secrets('rotating')).toBe('two');
    await rm(file);
    clock.advance(1_000);
    expect(await secrets('rotating')).toBe('two');
  });
});
