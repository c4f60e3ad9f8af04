import { describe, expect, it } from 'vitest';
import { normalizePath, pathForMatching } from '../../../src/core/path-normalize.ts';
import { readRequestTarget } from '../../../src/proxy/call.ts';
import type { DownstreamRequest } from '../../../src/proxy/listener.ts';

const ok = (path: string) => ({ ok: true, path });
const refused = (reason: string | RegExp) => ({ ok: false, reason: typeof reason === 'string' ? reason : expect.stringMatching(reason) });

describe('normalizePath', () => {
  const cases: Array<[string, string, ReturnType<typeof ok> | ReturnType<typeof refused>]> = [
    ['already normal', '/orders/1', ok('/orders/1')],
    ['root', '/', ok('/')],
    ['trailing slash kept', '/orders/', ok('/orders/')],
    ['dot-dot segment', '/public/../admin', ok('/admin')],
    ['dot segment', '/./admin/./x', ok('/admin/x')],
    ['dot-dot above the root stays at the root', '/../../admin', ok('/admin')],
    ['trailing dot-dot leaves a slash (RFC 3986 5.2.4)', '/a/b/..', ok('/a/')],
    ['trailing dot leaves a slash', '/a/.', ok('/a/')],
    ['encoded dots are dot segments', '/public/%2e%2e/admin', ok('/admin')],
    ['encoded dots, upper-case hex', '/public/%2E%2E/admin', ok('/admin')],
    ['mixed encoded dot', '/public/.%2e/admin', ok('/admin')],
    ['repeated slashes merged', '//admin', ok('/admin')],
    ['many slashes', '/a///b////', ok('/a/b/')],
    ['slashes merged before dots resolve', '/a//../b', ok('/b')],
    ['unreserved escapes decoded', '/%61dmin/%7Euser/%2D%5F', ok('/admin/~user/-_')],
    ['reserved escapes kept, hex upper-cased', '/a%3bb/%3a%40%20', ok('/a%3Bb/%3A%40%20')],
    ['non-ASCII escapes kept', '/caf%c3%a9', ok('/caf%C3%A9')],
    ['encoded % kept', '/100%25', ok('/100%25')],
    ['double-encoded other characters kept', '/%2541', ok('/%2541')],
    ['case untouched', '/ADMIN/X', ok('/ADMIN/X')],
    ['parameters kept', '/admin;jsessionid=1/x', ok('/admin;jsessionid=1/x')],
    ['parameters on a segment removed by ..', '/public;x/../admin', ok('/admin')],
    ['encoded slash refused', '/public/..%2Fadmin', refused(/encoded "\/"/)],
    ['encoded slash, lower-case, refused', '/a%2fb', refused(/%2F/)],
    ['encoded backslash refused', '/a%5Cb', refused(/%5C/)],
    ['raw backslash refused', '/public\\..\\admin', refused('backslash in path')],
    ['double-encoded dot refused', '/public/%252e%252e/admin', refused('double-encoded character in path')],
    ['double-encoded slash refused', '/a%252Fb', refused('double-encoded character in path')],
    ['double encoding assembled by decoding refused', '/%25%32e', refused('double-encoded character in path')],
    ['triple-encoded % refused', '/%2525', refused('double-encoded character in path')],
    ['overlong UTF-8 dot refused', '/x/%c0%ae%c0%ae/admin', refused(/not UTF-8/)],
    ['three-byte overlong dot refused', '/x/%E0%80%AE/admin', refused(/not UTF-8/)],
    ['a byte never in UTF-8 refused', '/a%FFb', refused(/not UTF-8/)],
    ['a truncated UTF-8 sequence refused', '/caf%C3', refused(/not UTF-8/)],
    ['UTF-8 escapes split by a slash stay separate runs', '/caf%C3%A9/%E2%80%93', ok('/caf%C3%A9/%E2%80%93')],
    ['encoded NUL refused', '/a%00b', refused('NUL in path')],
    ['raw NUL refused', '/a\u0000b', refused('NUL in path')],
    ['control character refused', '/a\u0007b', refused(/control/)],
    ['space refused', '/a b', refused(/space/)],
    // Found by test/fuzz/listener-http2.fuzz.test.ts: an HTTP/2 :path carried it to an HTTP/1.1 app, which refused the request line.
    ['raw non-ASCII refused', '/caf\u00e9', refused('character outside ASCII in path (percent-encode it)')],
    ['raw non-ASCII after a normalized prefix refused', '/a/../\u4e2d', refused(/outside ASCII/)],
    ['percent-encoded non-ASCII kept', '/caf%c3%a9', ok('/caf%C3%A9')],
    ['truncated escape refused', '/a%2', refused('invalid percent-encoding in path')],
    ['non-hex escape refused', '/a%zz', refused('invalid percent-encoding in path')],
    ['lone % refused', '/50%', refused('invalid percent-encoding in path')],
    ['fragment refused', '/public/..#/admin', refused(/fragment/)],
    ['Tomcat ..; refused', '/public/..;/admin', refused(/dot segment/)],
    ['.; refused', '/.;x/admin', refused(/dot segment/)],
    ['encoded ..; refused', '/public/%2e%2e;x/admin', refused(/dot segment/)],
    ['relative path refused', 'admin', refused(/start with/)],
  ];
  it.each(cases)('%s: %j', (_name, input, expected) => {
    expect(normalizePath(input)).toEqual(expected);
  });

  it('keeps %2F and %5C encoded (upper-case) when asked to, never decoding them', () => {
    expect(normalizePath('/a%2fb/%5c/../c', { encodedSeparators: 'keep' })).toEqual(ok('/a%2Fb/c'));
  });

  it('returns the same string for a path that needs no work (no copy on the hot path)', () => {
    const raw = '/orders/123/items';
    const result = normalizePath(raw);
    expect(result.ok && result.path).toBe(raw);
  });
});

describe('pathForMatching', () => {
  it.each([
    ['/orders/1', '/orders/1'],
    ['/admin;jsessionid=1', '/admin'],
    ['/admin;a=1/x;b=2', '/admin/x'],
    ['/;x/admin', '/admin'],
    ['/admin/;x', '/admin/'],
    ['/;x', '/'],
    ['/a%3Bb', '/a%3Bb'],
  ])('%s -> %s', (input, expected) => {
    expect(pathForMatching(input)).toBe(expected);
  });
});

function req(url: string, over: Partial<{ method: string; host: string; rawHosts: string[] }> = {}): DownstreamRequest {
  const host = over.host ?? 'orders';
  const rawHosts = over.rawHosts ?? [host];
  return { method: over.method ?? 'GET', url, headers: { host }, rawHeaders: rawHosts.flatMap((h) => ['Host', h]), httpVersion: '1.1' } as unknown as DownstreamRequest;
}

describe('readRequestTarget normalizes once, for matching and forwarding', () => {
  it('normalizes the path and keeps the query as sent', () => {
    expect(readRequestTarget(req('/public/%2e%2e/admin?x=%2e%2e'))).toEqual({ method: 'GET', path: '/admin', query: 'x=%2e%2e', authority: 'orders' });
  });

  it('refuses a path that cannot be normalized safely with request.invalid_path', () => {
    expect(readRequestTarget(req('/a%2Fb'))).toEqual({ code: 'request.invalid_path', reason: expect.stringMatching(/%2F/) });
  });

  it('keeps request.malformed for targets it cannot read', () => {
    expect(readRequestTarget(req('/x', { method: 'get' }))).toEqual({ code: 'request.malformed', reason: 'invalid method' });
    expect(readRequestTarget(req('/x', { host: '' }))).toEqual({ code: 'request.malformed', reason: 'missing authority (Host header)' });
  });

  it('normalizes the raw path of an absolute-form target (a URL parser would have turned \\ into /)', () => {
    expect(readRequestTarget(req('http://Orders.Shop:8080/public/../admin?q=1'))).toEqual({ method: 'GET', path: '/admin', query: 'q=1', authority: 'orders.shop:8080' });
    expect(readRequestTarget(req('http://orders\\..\\admin'))).toEqual({ code: 'request.invalid_path', reason: 'backslash in path' });
    expect(readRequestTarget(req('http://orders?x=1'))).toMatchObject({ path: '/', query: 'x=1', authority: 'orders' });
  });

  it('answers OPTIONS * itself: asterisk-form names no resource to forward to', () => {
    expect(readRequestTarget(req('*', { method: 'OPTIONS' }))).toEqual({ code: 'request.unsupported', reason: 'OPTIONS * is not forwarded' });
    expect(readRequestTarget(req('*', { method: 'GET' }))).toMatchObject({ code: 'request.malformed' });
  });

  it('refuses two Host headers, whatever node joined them into, and an authority that is not a host[:port]', () => {
    expect(readRequestTarget(req('/x', { host: 'orders, evil.example', rawHosts: ['orders', 'evil.example'] }))).toEqual({ code: 'request.malformed', reason: 'more than one Host header' });
    for (const host of ['orders, evil.example', 'orders evil', 'orders:80:80', 'a/b', 'orders:abc', 'x@orders']) {
      expect(readRequestTarget(req('/x', { host })), host).toMatchObject({ code: 'request.malformed' });
    }
    for (const host of ['orders', 'orders.shop.svc.cluster.local:8080', '10.0.0.1:15006', '[::1]:8080', 'my_service']) {
      expect(readRequestTarget(req('/x', { host })), host).toMatchObject({ authority: host });
    }
  });

  it('refuses two Authorization headers (HTTP/2 would keep the first silently)', () => {
    const twice = { ...req('/x'), headers: { host: 'orders', authorization: 'Bearer a' }, rawHeaders: ['Host', 'orders', 'Authorization', 'Bearer a', 'authorization', 'Bearer b'] };
    expect(readRequestTarget(twice as unknown as DownstreamRequest)).toEqual({ code: 'request.malformed', reason: 'more than one Authorization header' });
    const once = { ...req('/x'), headers: { host: 'orders', authorization: 'Bearer a' }, rawHeaders: ['Host', 'orders', 'Authorization', 'Bearer a'] };
    expect(readRequestTarget(once as unknown as DownstreamRequest)).toMatchObject({ path: '/x' });
  });

  it('refuses a query no HTTP/1.1 request line could carry (an HTTP/2 :path can; found by test/fuzz/listener-http2.fuzz.test.ts)', () => {
    for (const query of ['x=caf\u00e9', 'a b', 'a\u0001']) {
      expect(readRequestTarget(req(`/orders?${query}`))).toEqual({ code: 'request.malformed', reason: 'control character, space or character outside ASCII in the query' });
    }
    expect(readRequestTarget(req('/orders?x=caf%C3%A9&y=%20'))).toMatchObject({ path: '/orders', query: 'x=caf%C3%A9&y=%20' });
  });
});
