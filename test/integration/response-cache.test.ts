import type http from 'node:http';
import http2 from 'node:http2';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import { policyDoc } from '../helpers/static-policy.ts';

/*
 * Issue #15, response side: the inbound response cache of a Route's
 * `responses` rules, through a real sidecar in front of a real app. The app
 * numbers its answers per path, so a body says whether the app was reached.
 */

/** The app: answers per path, each answer numbered by how often the app answered that path. */
function cachingApp(): http.RequestListener {
  const served = new Map<string, number>();
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const n = (served.get(url.pathname) ?? 0) + 1;
    served.set(url.pathname, n);
    const body = (text: string) => `${text} #${n}`;
    switch (url.pathname) {
      case '/catalog':
        res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain' });
        return res.end(body(`catalog${url.search}`));
      case '/greeting':
        res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language', 'content-type': 'text/plain' });
        return res.end(body(req.headers['accept-language'] === 'fr' ? 'bonjour' : 'hello'));
      case '/anything':
        res.writeHead(200, { 'cache-control': 'max-age=60', vary: '*' });
        return res.end(body('any'));
      case '/private':
        res.writeHead(200, { 'cache-control': 'private, max-age=60' });
        return res.end(body('mine'));
      case '/account':
      case '/profile':
        // A per-caller answer the app (wrongly or not) marks shareable: only the route's rules keep callers apart.
        res.writeHead(200, { 'cache-control': 'public, s-maxage=60' });
        return res.end(body(`account of ${req.headers.authorization ?? 'nobody'}`));
      default:
        res.writeHead(404);
        return res.end();
    }
  };
}

describe('inbound response cache (Route responses[].cache)', () => {
  let pair: AppAndSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: cachingApp(),
      policy: [
        policyDoc('Route', 'orders', {
          service: 'orders',
          responses: [
            { name: 'profile', match: { paths: ['/profile'] }, cache: { cacheAuthenticated: true } },
            { name: 'public', match: { paths: ['/catalog', '/greeting', '/anything', '/private', '/account'], methods: ['GET', 'HEAD'] }, cache: {} },
          ],
        }),
        // The cache sits after the checks: a refused call is refused even when its answer is cached.
        policyDoc('AuthorizationPolicy', 'no-blocked', { action: 'DENY', rules: [{ name: 'blocked', when: [{ key: 'request.headers[x-blocked]', values: ['yes'] }] }] }),
        // One call at a time on /catalog: a call served from the cache gives its slot back like a forwarded one.
        policyDoc('RateLimitPolicy', 'catalog-one-at-a-time', { rules: [{ name: 'catalog', match: { paths: ['/catalog'] }, concurrency: { max: 1 } }] }),
      ],
    });
  });
  afterAll(async () => {
    await pair?.close();
  });

  const get = async (path: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') => {
    const res = await request(`${pair.sc.inboundUrl}${path}`, { method, headers: { host: 'orders.shop', ...headers } });
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
  };
  const accessLines = (path: string) => pair.sc.logs.filter((l) => l.log === 'access' && l.path === path);
  const metrics = async () => parsePrometheusText(await (await request(`${pair.sc.adminUrl}/metrics`)).body.text());

  it('serves a second GET from the cache, with Age, without reaching the app; the access log says hit', async () => {
    const hitsBefore = pair.app.hits();
    const first = await get('/catalog?page=1');
    const second = await get('/catalog?page=1');
    expect(first).toMatchObject({ status: 200, body: 'catalog?page=1 #1' });
    expect(first.headers.age).toBeUndefined();
    expect(second).toMatchObject({ status: 200, body: 'catalog?page=1 #1' });
    expect(Number(second.headers.age)).toBeGreaterThanOrEqual(0);
    expect(second.headers['cache-control']).toBe('public, max-age=60');
    expect(pair.app.hits() - hitsBefore).toBe(1);
    expect(accessLines('/catalog').map((l) => l.cache)).toEqual(['miss', 'hit']);
    // The query is part of the key.
    expect((await get('/catalog?page=2')).body).toBe('catalog?page=2 #2');
    const m = await metrics();
    expect(sumOf(m, 'meshgate_response_cache_lookups_total', { rule: 'shop/orders#public', result: 'hit' })).toBeGreaterThanOrEqual(1);
    expect(sumOf(m, 'meshgate_response_cache_stores_total', { rule: 'shop/orders#public', result: 'stored' })).toBeGreaterThanOrEqual(2);
    expect(sumOf(m, 'meshgate_response_cache_bytes')).toBeGreaterThan(0);
  });

  it('refuses a call the checks refuse even though its answer is cached', async () => {
    await get('/catalog?page=blocked');
    const hitsBefore = pair.app.hits();
    expect((await get('/catalog?page=blocked')).headers.age).toBeDefined();
    const refused = await get('/catalog?page=blocked', { 'x-blocked': 'yes' });
    expect(refused.status).toBe(403);
    expect(refused.headers['x-meshgate-reason']).toBe('authz.denied');
    expect(refused.body).not.toContain('catalog');
    expect(accessLines('/catalog').at(-1)).toMatchObject({ status: 403, reason: 'authz.denied' });
    expect(accessLines('/catalog').at(-1)!.cache).toBeUndefined();
    expect(pair.app.hits()).toBe(hitsBefore);
  });

  it('serves HTTP/2 callers from the same cache', async () => {
    const first = await get('/catalog?h2');
    const client = http2.connect(pair.sc.inboundUrl);
    try {
      const { headers, body } = await new Promise<{ headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        const stream = client.request({ ':path': '/catalog?h2', ':authority': 'orders.shop' });
        let text = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => (text += chunk));
        stream.on('response', (h) => stream.on('end', () => resolve({ headers: h, body: text })));
        stream.on('error', reject);
        stream.end();
      });
      expect(headers[':status']).toBe(200);
      expect(headers.age).toBeDefined();
      expect(body).toBe(first.body);
    } finally {
      client.close();
    }
  });

  it('answers a HEAD from the GET entry, without a body', async () => {
    const hitsBefore = pair.app.hits();
    const head = await get('/catalog?page=1', {}, 'HEAD');
    expect(head).toMatchObject({ status: 200, body: '' });
    expect(head.headers['content-length']).toBe(String('catalog?page=1 #1'.length));
    expect(head.headers.age).toBeDefined();
    expect(pair.app.hits()).toBe(hitsBefore);
  });

  it('keeps two variants of a Vary header apart and serves each its own', async () => {
    const en1 = await get('/greeting', { 'accept-language': 'en' });
    const fr1 = await get('/greeting', { 'accept-language': 'fr' });
    const en2 = await get('/greeting', { 'accept-language': 'en' });
    const fr2 = await get('/greeting', { 'accept-language': 'fr' });
    expect([en1.body, fr1.body, en2.body, fr2.body]).toEqual(['hello #1', 'bonjour #2', 'hello #1', 'bonjour #2']);
    expect(en2.headers.age).toBeDefined();
    expect(fr2.headers.age).toBeDefined();
  });

  it('never serves Vary: * or private answers from the cache', async () => {
    expect((await get('/anything')).body).toBe('any #1');
    expect((await get('/anything')).body).toBe('any #2');
    expect((await get('/private')).body).toBe('mine #1');
    expect((await get('/private')).body).toBe('mine #2');
    const m = await metrics();
    expect(sumOf(m, 'meshgate_response_cache_stores_total', { result: 'skipped', reason: 'vary_star' })).toBe(2);
    expect(sumOf(m, 'meshgate_response_cache_stores_total', { result: 'skipped', reason: 'private' })).toBe(2);
  });

  it("honours a request's no-cache (refetched, then stored) and no-store (neither served nor stored)", async () => {
    await get('/catalog?fresh');
    const refreshed = await get('/catalog?fresh', { 'cache-control': 'no-cache' });
    expect(refreshed.body).toMatch(/#\d+$/);
    expect(refreshed.headers.age).toBeUndefined();
    // The refreshed answer replaced the entry.
    expect((await get('/catalog?fresh')).body).toBe(refreshed.body);
    const noStore = await get('/catalog?fresh', { 'cache-control': 'no-store' });
    expect(noStore.headers.age).toBeUndefined();
    expect(noStore.body).not.toBe(refreshed.body);
    expect(
      accessLines('/catalog')
        .slice(-4)
        .map((l) => l.cache),
    ).toEqual(['miss', 'bypass:request_no_cache', 'hit', 'bypass:request_no_store']);
  });

  it('bypasses the cache for a call with credentials when the route does not say otherwise', async () => {
    const alice = await get('/account', { authorization: 'Bearer alice' });
    const bob = await get('/account', { authorization: 'Bearer bob' });
    const again = await get('/account', { authorization: 'Bearer alice' });
    expect([alice.body, bob.body, again.body]).toEqual(['account of Bearer alice #1', 'account of Bearer bob #2', 'account of Bearer alice #3']);
    // Nor does an anonymous call get an authenticated caller's answer (none was stored).
    expect((await get('/account')).body).toBe('account of nobody #4');
    expect(
      accessLines('/account')
        .slice(0, 3)
        .map((l) => l.cache),
    ).toEqual(['bypass:authenticated', 'bypass:authenticated', 'bypass:authenticated']);
    // The access log never carries the credential.
    expect(JSON.stringify(pair.sc.logs)).not.toContain('Bearer alice');
  });

  it("with cacheAuthenticated, caches per caller: one caller's answer is never served to another", async () => {
    const alice1 = await get('/profile', { authorization: 'Bearer alice' });
    const bob1 = await get('/profile', { authorization: 'Bearer bob' });
    const anonymous = await get('/profile');
    const alice2 = await get('/profile', { authorization: 'Bearer alice' });
    const bob2 = await get('/profile', { authorization: 'Bearer bob' });
    expect(alice1.body).toBe('account of Bearer alice #1');
    expect(bob1.body).toBe('account of Bearer bob #2');
    expect(anonymous.body).toBe('account of nobody #3');
    expect(alice2.body).toBe(alice1.body);
    expect(bob2.body).toBe(bob1.body);
    expect(alice2.headers.age).toBeDefined();
    expect(accessLines('/profile').map((l) => l.cache)).toEqual(['miss', 'miss', 'miss', 'hit', 'hit']);
  });

  it('a call served from the cache gives back the concurrency slot it held', async () => {
    // max 1 on /catalog: without the release a first hit would hold the slot and the next call get 503.
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await get('/catalog?slot=1')).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(accessLines('/catalog').filter((l) => l.cache === 'hit').length).toBeGreaterThanOrEqual(3);
  });
});

describe('inbound response cache and verified request principals (RequestAuthentication)', () => {
  let pair: AppAndSidecar;
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await startTestIdp();
    pair = await startAppAndSidecar({
      // Answers with the subject of the verified claims the sidecar forwards (the token itself is stripped).
      app: (req, res) => {
        const claims = req.headers['x-claims'];
        const sub = typeof claims === 'string' ? (JSON.parse(Buffer.from(claims, 'base64url').toString()) as { sub: string }).sub : 'nobody';
        res.writeHead(200, { 'cache-control': 'public, max-age=60' });
        res.end(`${req.url} for ${sub}`);
      },
      policy: [
        policyDoc('RequestAuthentication', 'idp', {
          onMissingToken: 'allow-anonymous',
          // A token in the query: no Authorization header tells the cache this call is authenticated, only the verified principal does.
          jwtRules: [{ name: 'idp', issuer: 'https://idp.test', jwksUri: `${idp.url}/jwks`, fromParams: ['access_token'], forwardClaimsHeader: 'x-claims' }],
        }),
        policyDoc('Route', 'orders', {
          service: 'orders',
          responses: [
            { name: 'mine', match: { paths: ['/mine'] }, cache: { cacheAuthenticated: true } },
            { name: 'shared', match: { paths: ['/shared'] }, cache: {} },
          ],
        }),
      ],
    });
  });
  afterAll(async () => {
    await pair?.close();
    await idp?.close();
  });

  const token = (sub: string, jti: string) => idp.sign({ iss: 'https://idp.test', sub, jti, exp: Math.floor(Date.now() / 1000) + 600 });
  const get = async (path: string) => {
    const res = await request(`${pair.sc.inboundUrl}${path}`, { headers: { host: 'orders.shop' } });
    return { status: res.statusCode, age: res.headers.age, body: await res.body.text() };
  };

  it('bypasses the cache for a call whose only credential is a verified token in the query', async () => {
    const hitsBefore = pair.app.hits();
    const alice = await token('alice', '1');
    expect(await get(`/shared?access_token=${alice}`)).toMatchObject({ status: 200, body: '/shared for alice', age: undefined });
    // Nothing stored: an anonymous caller gets its own answer, not alice's.
    expect(await get('/shared')).toMatchObject({ status: 200, body: '/shared for nobody', age: undefined });
    expect(pair.app.hits() - hitsBefore).toBe(2);
    expect(pair.sc.logs.filter((l) => l.log === 'access' && l.path === '/shared').map((l) => l.cache)).toEqual(['bypass:authenticated', 'miss']);
  });

  it("with cacheAuthenticated, keys by the verified principal: a caller gets its own answer whatever its token, never another caller's", async () => {
    const [alice1, alice2, bob] = await Promise.all([token('alice', 'a1'), token('alice', 'a2'), token('bob', 'b1')]);
    expect(await get(`/mine?access_token=${alice1}`)).toMatchObject({ body: '/mine for alice', age: undefined });
    expect(await get(`/mine?access_token=${bob}`)).toMatchObject({ body: '/mine for bob', age: undefined });
    expect(await get('/mine')).toMatchObject({ body: '/mine for nobody', age: undefined });
    const hitsBefore = pair.app.hits();
    const again = await get(`/mine?access_token=${alice2}`);
    expect(again.body).toBe('/mine for alice');
    expect(again.age).toBeDefined();
    expect((await get(`/mine?access_token=${bob}`)).body).toBe('/mine for bob');
    expect((await get('/mine')).body).toBe('/mine for nobody');
    expect(pair.app.hits()).toBe(hitsBefore);
  });
});
