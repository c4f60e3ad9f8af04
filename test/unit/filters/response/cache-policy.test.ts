import { describe, expect, it } from 'vitest';
import { parseCacheControl, requestDecision, storeDecision, varyNames } from '../../../../src/filters/response/cache-policy.ts';
import type { CachedResponse } from '../../../../src/filters/response/cache-store.ts';
import { createResponseCacheStore } from '../../../../src/filters/response/cache-store.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';

/*
 * The response cache's RFC 9111 rules (as a shared cache) and its memory,
 * on a fake clock: what is stored, for how long it is served, which variant
 * a request gets, and which entries go when the bytes run out.
 */

const NOW = Date.parse('2026-06-01T12:00:00Z');
const httpDate = (ms: number) => new Date(ms).toUTCString();

describe('storeDecision (RFC 9111 §3, §4.2.1)', () => {
  it.each([
    ['s-maxage wins over max-age', { 'cache-control': 'max-age=10, s-maxage=60' }, 60_000],
    ['max-age', { 'cache-control': 'public, max-age=30' }, 30_000],
    ['max-age wins over Expires', { 'cache-control': 'max-age=5', expires: httpDate(NOW + 3_600_000), date: httpDate(NOW) }, 5_000],
    ['Expires minus Date', { expires: httpDate(NOW + 120_000), date: httpDate(NOW - 30_000) }, 150_000],
    ['Expires without Date: minus the time received', { expires: httpDate(NOW + 90_000) }, 90_000],
    ['must-revalidate only forbids stale use', { 'cache-control': 'max-age=20, must-revalidate' }, 20_000],
  ])('stores with explicit freshness: %s', (_name, headers, lifetimeMs) => {
    expect(storeDecision(200, headers, NOW)).toMatchObject({ kind: 'store', lifetimeMs });
  });

  it.each([
    ['no freshness at all (no heuristics)', 200, {}, 'no_freshness'],
    ['no-store', 200, { 'cache-control': 'no-store, max-age=60' }, 'no_store'],
    ['private (a shared cache)', 200, { 'cache-control': 'private, max-age=60' }, 'private'],
    ['private with field names', 200, { 'cache-control': 'max-age=60, private="set-cookie, x-user"' }, 'private'],
    ['no-cache (would need revalidation)', 200, { 'cache-control': 'no-cache, max-age=60' }, 'no_cache'],
    ['Vary: *', 200, { 'cache-control': 'max-age=60', vary: 'Accept, *' }, 'vary_star'],
    ['Set-Cookie', 200, { 'cache-control': 'max-age=60', 'set-cookie': ['a=1'] }, 'set_cookie'],
    ['max-age=0', 200, { 'cache-control': 'max-age=0' }, 'stale'],
    ['an invalid Expires means expired', 200, { expires: '0' }, 'stale'],
    ['an Expires before Date', 200, { expires: httpDate(NOW - 1000), date: httpDate(NOW) }, 'stale'],
    ['an Age beyond the lifetime', 200, { 'cache-control': 'max-age=60', age: '61' }, 'stale'],
    ['a max-age that is no number', 200, { 'cache-control': 'max-age=soon' }, 'no_freshness'],
    ['a 500', 500, { 'cache-control': 'max-age=60' }, 'status'],
    ['a 206', 206, { 'cache-control': 'max-age=60' }, 'status'],
    ['a 302', 302, { 'cache-control': 'max-age=60' }, 'status'],
  ])('does not store: %s', (_name, status, headers, reason) => {
    expect(storeDecision(status, headers, NOW)).toEqual({ kind: 'skip', reason });
  });

  it('stores the heuristically cacheable statuses only with explicit freshness', () => {
    for (const status of [203, 204, 301, 404, 410]) expect(storeDecision(status, { 'cache-control': 'max-age=60' }, NOW).kind).toBe('store');
    expect(storeDecision(404, {}, NOW)).toEqual({ kind: 'skip', reason: 'no_freshness' });
  });

  it('starts the age at the larger of Age and the time since Date', () => {
    expect(storeDecision(200, { 'cache-control': 'max-age=60', age: '10' }, NOW)).toMatchObject({ initialAgeMs: 10_000 });
    expect(storeDecision(200, { 'cache-control': 'max-age=60', age: '10', date: httpDate(NOW - 20_000) }, NOW)).toMatchObject({ initialAgeMs: 20_000 });
    // A Date in the future counts as no age.
    expect(storeDecision(200, { 'cache-control': 'max-age=60', date: httpDate(NOW + 20_000) }, NOW)).toMatchObject({ initialAgeMs: 0 });
  });

  it('reads Vary names case-insensitively, sorted, without duplicates', () => {
    expect(varyNames('Accept-Language, accept-encoding,Accept-Language')).toEqual(['accept-encoding', 'accept-language']);
    expect(varyNames(undefined)).toEqual([]);
    expect(varyNames('*')).toBe('*');
  });

  it('parses quoted directive arguments with commas, and keeps the first of a repeated directive', () => {
    const cc = parseCacheControl(['private="a, b", max-age=5', 'max-age=500']);
    expect(cc.get('private')).toBe('a, b');
    expect(cc.get('max-age')).toBe('5');
  });
});

describe('requestDecision (RFC 9111 §5.2.1)', () => {
  it.each([
    ['GET', {}, { kind: 'lookup' }],
    ['HEAD', {}, { kind: 'lookup' }],
    ['POST', {}, { kind: 'bypass', reason: 'method' }],
    ['GET', { 'cache-control': 'no-store' }, { kind: 'bypass', reason: 'request_no_store' }],
    ['GET', { 'cache-control': 'no-cache' }, { kind: 'refresh', reason: 'request_no_cache' }],
    ['GET', { 'cache-control': 'max-age=0' }, { kind: 'refresh', reason: 'request_no_cache' }],
    ['GET', { pragma: 'no-cache' }, { kind: 'refresh', reason: 'request_no_cache' }],
    ['GET', { pragma: 'no-cache', 'cache-control': 'max-age=5' }, { kind: 'lookup' }],
    ['GET', { range: 'bytes=0-10' }, { kind: 'bypass', reason: 'range' }],
    ['GET', { 'if-none-match': '"x"' }, { kind: 'bypass', reason: 'conditional' }],
  ])('%s %j -> %j', (method, headers, expected) => {
    expect(requestDecision(method, headers)).toEqual(expected);
  });
});

describe('response cache store', () => {
  const response = (body: string, over: Partial<CachedResponse> = {}): CachedResponse => ({
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: Buffer.from(body),
    storedAt: 0,
    initialAgeMs: 0,
    lifetimeMs: 60_000,
    ...over,
  });

  it('serves an entry while fresh, with its age in whole seconds, and drops it once stale', () => {
    const clock = createFakeClock(NOW);
    const store = createResponseCacheStore({ maxBytes: 1 << 20, clock });
    store.put('k', [], {}, response('a', { storedAt: clock.now(), initialAgeMs: 5_000 }));
    clock.advance(2_500);
    expect(store.get('k', {})?.ageSeconds).toBe(7);
    clock.advance(52_499); // age 59.999 s of a 60 s lifetime
    expect(store.get('k', {})?.response.body.toString()).toBe('a');
    clock.advance(1);
    expect(store.get('k', {})).toBeUndefined();
    expect(store.entries()).toBe(0);
    expect(store.bytes()).toBe(0);
  });

  it('keeps one variant per set of Vary values; an absent header differs from an empty one', () => {
    const clock = createFakeClock(NOW);
    const store = createResponseCacheStore({ maxBytes: 1 << 20, clock });
    const vary = ['accept-language'];
    store.put('k', vary, { 'accept-language': 'fr' }, response('fr', { storedAt: clock.now() }));
    store.put('k', vary, { 'accept-language': 'en' }, response('en', { storedAt: clock.now() }));
    expect(store.get('k', { 'accept-language': 'fr' })?.response.body.toString()).toBe('fr');
    expect(store.get('k', { 'accept-language': 'en' })?.response.body.toString()).toBe('en');
    expect(store.get('k', { 'accept-language': 'de' })).toBeUndefined();
    expect(store.get('k', {})).toBeUndefined();
    store.put('k', vary, { 'accept-language': '' }, response('empty', { storedAt: clock.now() }));
    expect(store.get('k', {})).toBeUndefined();
    expect(store.get('k', { 'accept-language': '' })?.response.body.toString()).toBe('empty');
  });

  it('drops the variants kept under other Vary names when the resource starts varying differently', () => {
    const store = createResponseCacheStore({ maxBytes: 1 << 20, clock: createFakeClock(0) });
    store.put('k', ['accept-language'], { 'accept-language': 'fr' }, response('fr'));
    store.put('k', ['accept-encoding'], { 'accept-encoding': 'gzip' }, response('gz'));
    expect(store.entries()).toBe(1);
    expect(store.get('k', { 'accept-language': 'fr', 'accept-encoding': 'br' })).toBeUndefined();
    expect(store.get('k', { 'accept-encoding': 'gzip' })?.response.body.toString()).toBe('gz');
  });

  it('stays within its bytes, evicting the least recently used entry first', () => {
    let evicted = 0;
    const clock = createFakeClock(0);
    const body = 'x'.repeat(1000);
    // Room for two entries of ~1.3 KB, not three.
    const store = createResponseCacheStore({ maxBytes: 3_000, clock, onEvict: () => evicted++ });
    store.put('a', [], {}, response(body));
    store.put('b', [], {}, response(body));
    expect(store.get('a', {})).toBeDefined(); // a is now the most recently used
    store.put('c', [], {}, response(body));
    expect(store.get('b', {})).toBeUndefined();
    expect(store.get('a', {})).toBeDefined();
    expect(store.get('c', {})).toBeDefined();
    expect(evicted).toBe(1);
    expect(store.bytes()).toBeLessThanOrEqual(3_000);
  });

  it('refuses an entry larger than the whole cache, and replaces an entry without counting it twice', () => {
    const store = createResponseCacheStore({ maxBytes: 2_000, clock: createFakeClock(0) });
    expect(store.put('big', [], {}, response('x'.repeat(2_000)))).toBe(false);
    expect(store.entries()).toBe(0);
    store.put('k', [], {}, response('one'));
    const size = store.bytes();
    store.put('k', [], {}, response('two'));
    expect(store.bytes()).toBe(size);
    expect(store.get('k', {})?.response.body.toString()).toBe('two');
  });
});
