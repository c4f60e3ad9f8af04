import fc from 'fast-check';
import { expect } from 'vitest';
import { normalizePath, pathForMatching } from '../../src/core/path-normalize.ts';
import { readRequestTarget } from '../../src/proxy/call.ts';
import type { DownstreamRequest } from '../../src/proxy/listener.ts';
import { PATH_PIECES } from '../helpers/path-pieces.ts';
import { fuzzTarget, timeBudgetMs, timed } from './fuzz-harness.ts';

/*
 * Fuzzing the request path: normalizePath (what every policy matches and both
 * stacks forward) and readRequestTarget (method, path, query, authority from a
 * request line, origin- or absolute-form). test/property/ has the targeted
 * properties over a small alphabet; here the inputs are wider (any code unit,
 * long runs of pieces) and every property is checked on every input.
 */

const PIECES = [...PATH_PIECES, './', '../', '%252f', '%25%32%65', '%3f', '%23', '%0', '%G0', '.;', '?', '\t', '\r', '\n', '\u0000', '\u007f', 'é', '\u2028', '\ud800'];
const pieces = (max: number) => fc.array(fc.constantFrom(...PIECES), { maxLength: max }).map((parts) => parts.join(''));
const anyChars = fc.string({ unit: 'binary', maxLength: 60 });

/** Paths made of traversal pieces and random code units, sometimes very long. */
const path = fc.oneof(
  { weight: 4, arbitrary: pieces(24).map((p) => `/${p}`) },
  { weight: 2, arbitrary: fc.tuple(pieces(6), anyChars, pieces(6)).map(([a, b, c]) => `/${a}${b}${c}`) },
  { weight: 1, arbitrary: fc.tuple(pieces(4), fc.integer({ min: 100, max: 3000 })).map(([p, n]) => `/${p.repeat(n)}`.slice(0, 16_384)) },
  { weight: 1, arbitrary: anyChars },
);

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** What an app that percent-decodes once sees. */
function decodeOnce(text: string): string {
  return text.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

function checkNormalized(raw: string, mode: 'refuse' | 'keep'): void {
  const { value: result, ms } = timed(() => normalizePath(raw, { encodedSeparators: mode }));
  expect(ms, `normalizePath took ${ms.toFixed(1)} ms for ${raw.length} characters`).toBeLessThan(timeBudgetMs(raw.length));
  if (!result.ok) {
    expect(result.reason).toMatch(/^[ -~]+$/);
    return;
  }
  const out = result.path;
  expect(out.startsWith('/'), out).toBe(true);
  expect(normalizePath(out, { encodedSeparators: mode }), 'idempotent').toEqual(result);
  expect(out, 'no empty segment').not.toContain('//');
  expect(out, 'no refused character left').not.toMatch(/[\u0000-\u0020\u007f-\uffff\\#]/);
  // Plain checks per segment (thousands of segments: an expect() each would be the slow part).
  const problems: string[] = [];
  for (const segment of out.split('/').slice(1)) {
    const name = segment.split(';')[0]!;
    const decoded = decodeOnce(segment);
    if (segment === '.' || segment === '..' || name === '.' || name === '..') problems.push(`dot segment ${segment}`);
    // An app that decodes once must see no traversal and no extra separator...
    if (decoded === '.' || decoded === '..' || decodeOnce(name) === '.' || decodeOnce(name) === '..') problems.push(`encoded dot segment ${segment}`);
    if (decoded.includes('\u0000')) problems.push(`encoded NUL in ${segment}`);
    // (`encodedSeparators: keep` keeps %2F and %5C on purpose.)
    if (mode === 'refuse' && /[/\\]/.test(decoded)) problems.push(`encoded separator in ${segment}`);
    // ...and an app that decodes twice no dot, separator, NUL or escape of its own.
    if (/%(2e|2f|5c|00|25)/i.test(decoded)) problems.push(`double-encoded character in ${segment}`);
  }
  for (const [, hex] of out.matchAll(/%(.{0,2})/g)) {
    if (!/^[0-9A-F]{2}$/.test(hex!)) problems.push(`escape %${hex} not two upper-case hex digits`);
    else if (UNRESERVED.test(String.fromCharCode(Number.parseInt(hex!, 16)))) problems.push(`escape of an unreserved character %${hex}`);
  }
  expect(problems, `${JSON.stringify(raw)} -> ${out}`).toEqual([]);
  // Encoded separators are refused, never passed, unless kept on purpose.
  if (mode === 'refuse') expect(out).not.toMatch(/%(2F|5C)/);
  // What policies match is itself a normalized path, and stable.
  const matching = pathForMatching(out);
  expect(matching).not.toContain(';');
  expect(matching).not.toContain('//');
  expect(pathForMatching(matching)).toBe(matching);
  expect(normalizePath(matching, { encodedSeparators: mode })).toEqual({ ok: true, path: matching });
}

fuzzTarget({
  name: 'path-normalize',
  arbitrary: path,
  shortRuns: 2000,
  shortMs: 2500,
  check(raw) {
    expect(typeof raw).toBe('string');
    for (const mode of ['refuse', 'keep'] as const) checkNormalized(raw, mode);
    // Refusals that must not depend on where in the path the character is.
    const result = normalizePath(raw);
    if (/[\u0000\\#\u0080-\uffff]|%00|%2f|%5c/i.test(raw)) expect(result.ok, `${JSON.stringify(raw)} passed: ${JSON.stringify(result)}`).toBe(false);
  },
});

// ---- the request target of a whole request -----------------------------------

interface TargetInput {
  method: string;
  url: string;
  http2: boolean;
  host: string | undefined;
}

const methodArb = fc.oneof(fc.constantFrom('GET', 'POST', 'OPTIONS', 'CONNECT', 'M-SEARCH', 'get', ''), fc.string({ unit: 'binary-ascii', maxLength: 40 }));
const urlArb = fc.oneof(
  path,
  fc.tuple(path, fc.string({ unit: 'binary', maxLength: 30 })).map(([p, q]) => `${p}?${q}`),
  fc
    .tuple(
      fc.constantFrom('http://', 'https://', 'HTTP://', 'http:/', 'ftp://', 'http://user@', 'http://[::1', 'http://a:99999'),
      fc.string({ unit: 'binary-ascii', maxLength: 20 }),
      fc.oneof(path, fc.constant('')),
    )
    .map(([s, h, p]) => `${s}${h}${p}`),
  fc.constantFrom('*', '', '?', 'a', '//evil.example/x', '/\\evil'),
);

function downstream(input: TargetInput): DownstreamRequest {
  const headers: Record<string, string> = {};
  if (input.host !== undefined) headers[input.http2 ? ':authority' : 'host'] = input.host;
  const rawHeaders = Object.entries(headers).flat();
  return { method: input.method, url: input.url, headers, rawHeaders, httpVersion: input.http2 ? '2.0' : '1.1' } as unknown as DownstreamRequest;
}

fuzzTarget<TargetInput>({
  name: 'request-target',
  arbitrary: fc.record({
    method: methodArb,
    url: urlArb,
    http2: fc.boolean(),
    host: fc.option(fc.oneof(fc.constantFrom('orders', 'orders:8080', '[::1]:80', ''), fc.string({ unit: 'binary-ascii', maxLength: 20 })), { nil: undefined }),
  }),
  shortRuns: 3000,
  shortMs: 1500,
  check(input) {
    const target = readRequestTarget(downstream(input));
    if ('code' in target) {
      // OPTIONS * is answered by the sidecar itself (501 request.unsupported).
      expect(['request.malformed', 'request.invalid_path', 'request.unsupported']).toContain(target.code);
      expect(target.reason).toMatch(/^[ -~]+$/);
      return;
    }
    expect(target.method).toMatch(/^[A-Z][A-Z0-9-]*$/);
    expect(target.authority.length).toBeGreaterThan(0);
    if (target.path === '*') {
      expect(target.method).toBe('OPTIONS');
      return;
    }
    // The path filters match is the one forwarded: normalized, and no query or fragment in it.
    expect(normalizePath(target.path)).toEqual({ ok: true, path: target.path });
    expect(target.path).not.toMatch(/[?#]/);
    // Query and path put back together give the same split again.
    const again = readRequestTarget(downstream({ ...input, host: target.authority, url: target.query === '' ? target.path : `${target.path}?${target.query}` }));
    expect(again).toMatchObject({ path: target.path, query: target.query });
  },
});
