import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createAuthnFilter } from '../../../../src/filters/authn/authn-filter.ts';
import type { AuthnRuntime } from '../../../../src/filters/authn/authn-runtime.ts';
import { createAuthnRuntime } from '../../../../src/filters/authn/authn-runtime.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import type { JsonServer, TestKey } from './authn-fixtures.ts';
import { AUDIENCE, authnDoc, b64url, deadUrl, ISSUER, json, jwksOf, makeCall, makeKey, mint, startJsonServer } from './authn-fixtures.ts';

const NOW = 1_800_000_000;
const RULE = 'shop/users#idp';

let rsa: TestKey;
let rsa2: TestKey;
let ec: TestKey;
let stranger: TestKey;
let jwks: JsonServer;
let attacker: JsonServer;

beforeAll(async () => {
  [rsa, rsa2, ec, stranger] = await Promise.all([makeKey('k1'), makeKey('k2'), makeKey('e1', 'ES256'), makeKey('k1')]);
  jwks = await startJsonServer(jwksOf(rsa));
  attacker = await startJsonServer(jwksOf(stranger));
});
afterAll(async () => {
  await jwks?.close();
  await attacker?.close();
});

function setup(spec?: string, shadowCounts: string[] = []) {
  const clock = createFakeClock(NOW * 1000);
  const runtime = createAuthnRuntime({ random: () => 0.5, clock, onShadowDenial: (policy, rule) => shadowCounts.push(`${policy}#${rule}`) });
  const docSpec = spec ?? `jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", audiences: [${AUDIENCE}], forwardClaimsHeader: x-jwt-claims }]`;
  return { clock, runtime, filter: createAuthnFilter([authnDoc(docSpec)], runtime) };
}

async function run(filter: ReturnType<typeof createAuthnFilter>, call: CallContext): Promise<string> {
  const v: Verdict = await filter.onRequest(call);
  return v.kind === 'continue' ? 'continue' : `${v.code}${v.rule ? ` ${v.rule}` : ''}`;
}

/**
 * The token with the last character of its signature changed in bits the
 * bytes do not use (a 256-byte RSA signature leaves the low 4 bits of its
 * last base64url character unused): the same bytes, another text.
 */
function otherSpellingOfLastChar(token: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(token.at(-1)!);
  const other = `${token.slice(0, -1)}${alphabet[last ^ 1]}`;
  expect(Buffer.from(other.split('.')[2]!, 'base64url')).toEqual(Buffer.from(token.split('.')[2]!, 'base64url'));
  return other;
}

const bearer = (token: string): CallContext => makeCall({ headers: { authorization: `Bearer ${token}` } });

describe('authn filter: JWT verification', () => {
  // [case, token maker, expected outcome]
  const cases: Array<[string, () => Promise<string>, string]> = [
    ['a valid RS256 token', () => mint({ key: rsa, now: NOW }), 'continue'],
    ['alg none', async () => `${b64url({ alg: 'none', kid: 'k1' })}.${b64url({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, exp: NOW + 300 })}.`, `authn.jwt_algorithm ${RULE}`],
    [
      'RS256/HS256 confusion: HS256 signed with the RSA public key as the secret',
      () => new SignJWT({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, exp: NOW + 300 }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode(rsa.publicPem)),
      `authn.jwt_algorithm ${RULE}`,
    ],
    ['ES256 token where the set has only an RSA key: no key of that type', () => mint({ key: ec, now: NOW, kid: null }), `authn.jwt_invalid ${RULE}`],
    ['expired', () => mint({ key: rsa, now: NOW - 600, exp: NOW - 60 }), `authn.jwt_expired ${RULE}`],
    ['expired within the 30 s clock skew', () => mint({ key: rsa, now: NOW - 600, exp: NOW - 20 }), 'continue'],
    ['nbf in the future', () => mint({ key: rsa, now: NOW, nbf: NOW + 120 }), `authn.jwt_not_yet_valid ${RULE}`],
    ['nbf within the clock skew', () => mint({ key: rsa, now: NOW, nbf: NOW + 10 }), 'continue'],
    ['wrong audience', () => mint({ key: rsa, now: NOW, aud: 'payments' }), `authn.jwt_audience ${RULE}`],
    ['one of several audiences', () => mint({ key: rsa, now: NOW, aud: ['payments', AUDIENCE] }), 'continue'],
    ['an issuer no rule names', () => mint({ key: rsa, now: NOW, iss: 'https://evil.example' }), 'authn.jwt_issuer shop/users#unknown-issuer'],
    ['no exp', () => mint({ key: rsa, now: NOW, exp: null }), `authn.jwt_invalid ${RULE}`],
    ['signed by another key with the same kid', () => mint({ key: stranger, now: NOW }), `authn.jwt_invalid ${RULE}`],
    [
      'a tampered payload',
      async () => (await mint({ key: rsa, now: NOW })).replace(/\.[^.]+\./, `.${b64url({ iss: ISSUER, sub: 'root', aud: AUDIENCE, exp: NOW + 300 })}.`),
      `authn.jwt_invalid ${RULE}`,
    ],
    ['jku pointing at another key set is not followed', () => mint({ key: stranger, now: NOW, header: { jku: `${attacker.url}/jwks`, x5u: `${attacker.url}/x5u` } }), `authn.jwt_invalid ${RULE}`],
    ['an embedded jwk header is not used', async () => mint({ key: stranger, now: NOW, kid: null, header: { jwk: stranger.publicJwk } }), `authn.jwt_invalid ${RULE}`],
    ['not a JWT at all', async () => 'opaque-token-value', 'authn.jwt_invalid shop/users#malformed-token'],
    ['a JWT-shaped string that does not decode', async () => 'a.b.c', 'authn.jwt_invalid shop/users#malformed-token'],
    // Found by test/fuzz/jwt.fuzz.test.ts: other spellings of a valid token used to verify as that token.
    ['a valid token with a space inside its signature', async () => (await mint({ key: rsa, now: NOW })).replace(/\.([^.]{10})([^.]*)$/, '.$1 $2'), `authn.jwt_invalid ${RULE}`],
    ['a valid token with padding on its signature', async () => `${await mint({ key: rsa, now: NOW })}==`, `authn.jwt_invalid ${RULE}`],
    ['a valid token whose signature ends in a character differing only in unused bits', async () => otherSpellingOfLastChar(await mint({ key: rsa, now: NOW })), `authn.jwt_invalid ${RULE}`],
  ];
  for (const [name, token, expected] of cases) {
    it(name, async () => {
      const { filter } = setup();
      const call = bearer(await token());
      expect(await run(filter, call)).toBe(expected);
      if (expected !== 'continue') expect(call.annotations.auth).toBeUndefined();
    });
  }

  it('never follows jku/x5u: the other key set is never fetched', async () => {
    const before = attacker.hits();
    const { filter } = setup();
    await run(filter, bearer(await mint({ key: stranger, now: NOW, header: { jku: `${attacker.url}/jwks` } })));
    expect(attacker.hits()).toBe(before);
  });

  it('sets the request principal and claims, strips the token and forwards the claims header', async () => {
    const { filter } = setup();
    const token = await mint({ key: rsa, now: NOW, sub: 'alice', claims: { groups: ['admins'] } });
    const call = makeCall({ headers: { authorization: `Bearer ${token}`, 'x-jwt-claims': 'forged' } });
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth).toMatchObject({ principal: `${ISSUER}/alice`, issuer: ISSUER, subject: 'alice', claims: { groups: ['admins'], aud: AUDIENCE } });
    const edits = call.annotations.upstreamEdits!;
    expect(edits.removeHeaders).toEqual(expect.arrayContaining(['x-jwt-claims', 'authorization']));
    expect(JSON.parse(Buffer.from(edits.setHeaders['x-jwt-claims']!, 'base64url').toString())).toMatchObject({ sub: 'alice', groups: ['admins'] });
  });

  it('removes a forged claims header even from calls it lets through anonymously', async () => {
    const { filter } = setup(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", forwardClaimsHeader: x-jwt-claims }]\nonMissingToken: allow-anonymous`);
    const call = makeCall({ headers: { 'x-jwt-claims': b64url({ sub: 'root' }) } });
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth).toBeUndefined();
    expect(call.annotations.upstreamEdits).toEqual({ removeHeaders: ['x-jwt-claims'], setHeaders: {} });
  });

  it('keeps the token for the app with forwardOriginalToken', async () => {
    const { filter } = setup(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", forwardOriginalToken: true }]`);
    const call = bearer(await mint({ key: rsa, now: NOW }));
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.upstreamEdits).toBeUndefined();
  });

  it('answers 401 with a Bearer challenge', async () => {
    const { filter } = setup();
    const missing = await filter.onRequest(makeCall());
    expect(missing).toMatchObject({ kind: 'respond', code: 'authn.missing_token', rule: 'shop/users#missing-token', headers: { 'www-authenticate': 'Bearer' } });
    const expired = await filter.onRequest(bearer(await mint({ key: rsa, now: NOW - 600, exp: NOW - 60 })));
    expect(expired).toMatchObject({ code: 'authn.jwt_expired', reason: 'token expired', headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
  });
});

describe('authn filter: where the token travels', () => {
  const spec = (extra: string) => `jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", ${extra} }]`;

  it('reads a cookie and cuts only that cookie out', async () => {
    const { filter } = setup(spec('fromCookies: [session]'));
    const token = await mint({ key: rsa, now: NOW });
    const call = makeCall({ headers: { cookie: `theme=dark; session=${token}; lang=en` } });
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.upstreamEdits).toEqual({ removeHeaders: ['cookie'], setHeaders: { cookie: 'theme=dark; lang=en' } });
  });

  it('reads a query parameter and cuts only that parameter out', async () => {
    const { filter } = setup(spec('fromParams: [access_token]'));
    const token = await mint({ key: rsa, now: NOW });
    const call = makeCall({ query: `page=2&access_token=${token}&q=a%20b` });
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.upstreamEdits).toEqual({ removeHeaders: [], setHeaders: {}, query: 'page=2&q=a%20b' });
  });

  it('reads a custom header with no prefix', async () => {
    const { filter } = setup(spec('fromHeaders: [{ name: x-token }]'));
    const call = makeCall({ headers: { 'x-token': await mint({ key: rsa, now: NOW }) } });
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.upstreamEdits!.removeHeaders).toEqual(['x-token']);
  });

  it('matches the Bearer scheme case-insensitively and ignores other schemes', async () => {
    const { filter } = setup();
    expect(await run(filter, makeCall({ headers: { authorization: `bearer ${await mint({ key: rsa, now: NOW })}` } }))).toBe('continue');
    expect(await run(filter, makeCall({ headers: { authorization: 'Basic YWxpY2U6c2VjcmV0' } }))).toBe('authn.missing_token shop/users#missing-token');
  });

  it('refuses two different tokens in one request', async () => {
    const { filter } = setup(spec('fromHeaders: [{ name: authorization, prefix: "Bearer " }], fromCookies: [session]'));
    const call = makeCall({ headers: { authorization: `Bearer ${await mint({ key: rsa, now: NOW, sub: 'alice' })}`, cookie: `session=${await mint({ key: rsa, now: NOW, sub: 'bob' })}` } });
    expect(await run(filter, call)).toBe('authn.jwt_invalid shop/users#ambiguous-token');
  });

  it('refuses a token sent where its issuer rule does not read', async () => {
    const docs = [
      authnDoc(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", fromCookies: [session] }, { name: other, issuer: "https://other.example", jwksUri: "${jwks.url}/jwks" }]`),
    ];
    const filter = createAuthnFilter(docs, createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000) }));
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW })))).toBe('authn.jwt_issuer shop/users#idp');
  });
});

describe('authn filter: calls without a token', () => {
  it('deny (the default): 401 authn.missing_token', async () => {
    const { filter } = setup();
    expect(await run(filter, makeCall())).toBe('authn.missing_token shop/users#missing-token');
  });

  it('allow-anonymous: continues with no request principal; a bad token is still refused', async () => {
    const { filter } = setup(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks" }]\nonMissingToken: allow-anonymous`);
    const call = makeCall();
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth).toBeUndefined();
    expect(await run(filter, bearer('garbage'))).toBe('authn.jwt_invalid shop/users#malformed-token');
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW - 900, exp: NOW - 600 })))).toBe(`authn.jwt_expired ${RULE}`);
  });

  it('no RequestAuthentication document: tokens are not read, nobody is authenticated', async () => {
    const filter = createAuthnFilter([], createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000) }));
    const call = bearer(await mint({ key: rsa, now: NOW }));
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth).toBeUndefined();
  });
});

describe('authn filter: inline keys', () => {
  it('verifies with an inline JWKS and refuses keys of other sets', async () => {
    const { filter } = setup(`jwtRules: [{ name: idp, issuer: "${ISSUER}", algorithms: [ES256], jwks: { keys: [${JSON.stringify(ec.publicJwk)}] } }]`);
    expect(await run(filter, bearer(await mint({ key: ec, now: NOW })))).toBe('continue');
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW })))).toBe('authn.jwt_algorithm shop/users#idp');
  });
});

describe('authn filter: shadow mode', () => {
  const shadowSpec = () => `mode: shadow\njwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks", audiences: [${AUDIENCE}], forwardClaimsHeader: x-jwt-claims }]`;

  it('counts and lets through a token that fails, as anonymous', async () => {
    const counts: string[] = [];
    const { filter } = setup(shadowSpec(), counts);
    const call = bearer(await mint({ key: rsa, now: NOW, aud: 'payments' }));
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth).toBeUndefined();
    expect(call.annotations.shadowDenials).toEqual([RULE]);
    expect(counts).toEqual([RULE]);
  });

  it('counts a missing token under the missing-token rule', async () => {
    const counts: string[] = [];
    const { filter } = setup(shadowSpec(), counts);
    expect(await run(filter, makeCall())).toBe('continue');
    expect(counts).toEqual(['shop/users#missing-token']);
  });

  it('a verified token sets the principal but changes nothing the app sees', async () => {
    const counts: string[] = [];
    const { filter } = setup(shadowSpec(), counts);
    const call = bearer(await mint({ key: rsa, now: NOW }));
    expect(await run(filter, call)).toBe('continue');
    expect(call.annotations.auth?.principal).toBe(`${ISSUER}/alice`);
    expect(call.annotations.upstreamEdits).toEqual({ removeHeaders: ['x-jwt-claims'], setHeaders: {} });
    expect(counts).toEqual([]);
  });

  it('an enforcing document still refuses what its rules own and its onMissingToken', async () => {
    const counts: string[] = [];
    const runtime = createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000), onShadowDenial: (p, r) => counts.push(`${p}#${r}`) });
    const filter = createAuthnFilter(
      [
        authnDoc(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${jwks.url}/jwks" }]`, 'enforced'),
        authnDoc(`mode: shadow\njwtRules: [{ name: new-idp, issuer: "https://new.example", jwksUri: "${jwks.url}/jwks", audiences: [nobody] }]`, 'trial'),
      ],
      runtime,
    );
    // A failing token of the shadow issuer is counted; the call then has no credential, and the enforcing document wants one.
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW, iss: 'https://new.example' })))).toBe('authn.missing_token shop/enforced#missing-token');
    expect(counts).toEqual(['shop/trial#new-idp']);
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW, aud: 'x' })))).toBe('continue');
    expect(await run(filter, bearer(await mint({ key: rsa, now: NOW - 900, exp: NOW - 600 })))).toBe('authn.jwt_expired shop/enforced#idp');
  });
});

describe('authn filter: JWKS fetching', () => {
  const timings = { refreshIntervalMs: 600_000, retryAfterFailureMs: 5_000, unknownKidRefetchMs: 30_000 };
  let server: JsonServer;
  let runtime: AuthnRuntime;
  let clock: ReturnType<typeof createFakeClock>;
  let filter: ReturnType<typeof createAuthnFilter>;

  const fresh = async (handler = jwksOf(rsa)) => {
    await server?.close();
    server = await startJsonServer(handler);
    clock = createFakeClock(NOW * 1000);
    runtime = createAuthnRuntime({ random: () => 0.5, clock, jwksTimings: timings });
    filter = createAuthnFilter([authnDoc(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${server.url}/jwks" }]`)], runtime);
  };
  const token = (key: TestKey, kid?: string) => mint({ key, now: clock.now() / 1000, ...(kid ? { kid } : {}) });
  afterAll(() => server?.close());

  it('fetches once and serves later calls from the cache', async () => {
    await fresh();
    for (let i = 0; i < 3; i++) expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    expect(server.hits()).toBe(1);
  });

  it('concurrent first calls share one fetch', async () => {
    await fresh();
    const t = await token(rsa);
    const results = await Promise.all(Array.from({ length: 10 }, () => run(filter, bearer(t))));
    expect(results.every((r) => r === 'continue')).toBe(true);
    expect(server.hits()).toBe(1);
  });

  it('unknown kid: one refetch, then 401; a second unknown kid within the rate limit does not refetch', async () => {
    await fresh();
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    expect(server.hits()).toBe(1);
    expect(await run(filter, bearer(await token(rsa2)))).toBe(`authn.jwt_invalid ${RULE}`);
    expect(server.hits()).toBe(2);
    clock.advance(10_000);
    expect(await run(filter, bearer(await token(rsa2, 'k3')))).toBe(`authn.jwt_invalid ${RULE}`);
    expect(server.hits()).toBe(2);
    // After the interval, a rotation becomes visible: the IdP now publishes k2.
    server.set(jwksOf(rsa, rsa2));
    clock.advance(30_000);
    expect(await run(filter, bearer(await token(rsa2)))).toBe('continue');
    expect(server.hits()).toBe(3);
  });

  it('refreshes in the background after the refresh interval', async () => {
    await fresh();
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    server.set(jwksOf(rsa2));
    clock.advance(600_000);
    // Served from the cached set while the refresh runs.
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    await expect.poll(() => runtime.stats().jwks[0]!.fetchedAt).toBe(clock.now());
    expect(server.hits()).toBe(2);
    // The refreshed set replaced the old one.
    expect(await run(filter, bearer(await token(rsa2)))).toBe('continue');
    expect(server.hits()).toBe(2);
  });

  it('JWKS down with cached keys: still verifies, keeps the last good set, retries after a pause', async () => {
    await fresh();
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    server.set(json(500, { error: 'down' }));
    clock.advance(600_000);
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    await expect.poll(() => runtime.stats().jwks[0]!.failingFor).toBe(1);
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    expect(server.hits()).toBe(2);
    expect(runtime.stats().jwks[0]).toMatchObject({ keys: 1, failures: 1, lastError: 'HTTP 500' });
    // Garbage is a failure too: the good set stays.
    server.set(json(200, { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }));
    clock.advance(5_000);
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    await expect.poll(() => runtime.stats().jwks[0]!.failingFor).toBe(2);
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
  });

  it('JWKS down without cached keys: 503 authn.jwks_unavailable (fail closed), no retry storm', async () => {
    await fresh(json(503, {}));
    expect(await run(filter, bearer(await token(rsa)))).toBe(`authn.jwks_unavailable ${RULE}`);
    expect(await run(filter, bearer(await token(rsa)))).toBe(`authn.jwks_unavailable ${RULE}`);
    expect(server.hits()).toBe(1);
    server.set(jwksOf(rsa));
    clock.advance(5_000);
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    expect(server.hits()).toBe(2);
  });

  it('JWKS unreachable (connection refused): 503', async () => {
    const url = await deadUrl();
    const f = createAuthnFilter([authnDoc(`jwtRules: [{ name: idp, issuer: "${ISSUER}", jwksUri: "${url}/jwks" }]`)], createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000) }));
    const v = await f.onRequest(bearer(await mint({ key: rsa, now: NOW })));
    expect(v).toMatchObject({ kind: 'respond', code: 'authn.jwks_unavailable' });
    expect((v as { headers?: unknown }).headers).toBeUndefined();
  });

  it('an unknown kid while the JWKS is failing is 503, not a bad token', async () => {
    await fresh();
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    server.set(json(500, {}));
    clock.advance(30_000);
    expect(await run(filter, bearer(await token(rsa2)))).toBe(`authn.jwks_unavailable ${RULE}`);
  });

  it('key sets survive a new snapshot (one runtime, a new filter)', async () => {
    await fresh();
    expect(await run(filter, bearer(await token(rsa)))).toBe('continue');
    const next = createAuthnFilter([authnDoc(`jwtRules: [{ name: idp2, issuer: "${ISSUER}", jwksUri: "${server.url}/jwks" }]`)], runtime);
    expect(await run(next, bearer(await token(rsa)))).toBe('continue');
    expect(server.hits()).toBe(1);
  });
});
