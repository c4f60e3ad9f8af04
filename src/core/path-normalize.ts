/*
 * Request path normalization: done once per call, before the filter chain, and
 * the result is both what every policy matches and what is forwarded. A proxy
 * that matches one spelling of a path and forwards another lets an encoding
 * trick (`/public/%2e%2e/admin`) reach a path a rule forbids; a proxy that
 * forwards exactly what it matched cannot be fooled that way.
 *
 * The canonical form (README "Path normalization" has the user-facing table):
 *   - `%XX` of an unreserved character (RFC 3986 §2.3: A-Z a-z 0-9 - . _ ~) is
 *     decoded; every other escape is kept, with upper-case hex;
 *   - dot segments are resolved (RFC 3986 §5.2.4), after that decoding, so
 *     `%2e%2e` is `..`; `..` above the root stays at the root;
 *   - repeated slashes are merged (`//admin` is `/admin`); a trailing slash is kept;
 *   - `%2F` and `%5C` (encoded `/` and `\`) are refused by default, never decoded
 *     into a separator (`encodedSeparators: 'keep'` keeps them encoded instead);
 *   - refused outright: a malformed escape, NUL (raw or `%00`), control
 *     characters and spaces, escaped bytes that are not UTF-8 (`%C0%AE`, an
 *     overlong `.`), a raw character outside ASCII (HTTP/1.1 parsers
 *     refuse it in a request line; HTTP/2 lets it through in `:path`, so an
 *     HTTP/2 caller could otherwise make us send an HTTP/1.1 app a request line
 *     it cannot parse), a raw `\` (WHATWG URL parsers treat it as `/`), a
 *     `#`, a double-encoded `.`, `/`, `\`, `%` or NUL (`%252e`: harmless here,
 *     but an app that decodes twice would see a dot segment), and a dot segment
 *     carrying `;` parameters (`..;`: Tomcat's traversal trick);
 *   - `;` parameters stay in the forwarded path; policies match the path with
 *     them removed from each segment (see `pathForMatching`), which is what a
 *     server that honours them (Tomcat, Jetty) routes on;
 *   - case is untouched: paths are case-sensitive, `/ADMIN` is not `/admin`.
 *
 * Invariant: normalizePath is idempotent — a normalized path normalizes to
 * itself (test/property/path-normalize.property.test.ts checks it).
 */

import { isUtf8 } from 'node:buffer';

export interface NormalizeOptions {
  /** `%2F` / `%5C`: refuse the request (default) or keep them encoded. Never decoded. */
  readonly encodedSeparators?: 'refuse' | 'keep';
}

export type NormalizedPath = { readonly ok: true; readonly path: string } | { readonly ok: false; readonly reason: string };

/** Anything that may need work: escapes, refused characters, `//`, or a segment starting with `.`. */
const NEEDS_WORK = /[%\\#\x00-\x20\x7f-\uffff]|\/\/|\/\.\.?(?:[/;]|$)/;

/** `%25` followed by the hex of NUL, `%`, `.`, `/` or `\`: a double-encoded character that matters. */
const DOUBLE_ENCODED = /%25(?:00|25|2e|2f|5c)/i;

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

function isUnreserved(code: number): boolean {
  return (
    (code >= 65 && code <= 90) || // A-Z
    (code >= 97 && code <= 122) || // a-z
    (code >= 48 && code <= 57) || // 0-9
    code === 45 || // -
    code === 46 || // .
    code === 95 || // _
    code === 126 // ~
  );
}

const HEX = '0123456789ABCDEF';

/**
 * Each run of escaped bytes at or above 0x80 (kept encoded, upper-case hex)
 * must be UTF-8 (RFC 3986 §2.5). An overlong encoding such as `%C0%AE` matches
 * no rule written for `.`, yet a lax decoder in the app reads it as one: a
 * dot segment the normalizer never saw.
 */
function escapesAreUtf8(decoded: string): boolean {
  if (decoded.indexOf('%') < 0) return true;
  for (const run of decoded.match(/(?:%[89A-F][0-9A-F])+/g) ?? []) {
    const bytes = Buffer.alloc(run.length / 3);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(run.slice(i * 3 + 1, i * 3 + 3), 16);
    if (!isUtf8(bytes)) return false;
  }
  return true;
}

/**
 * The canonical form of an origin-form path (no query string). `raw` must start
 * with `/`. A refusal is a value, never an exception: it becomes a 400
 * `request.invalid_path`.
 */
export function normalizePath(raw: string, opts: NormalizeOptions = {}): NormalizedPath {
  if (!raw.startsWith('/')) return { ok: false, reason: 'path must start with /' };
  if (!NEEDS_WORK.test(raw)) return { ok: true, path: raw };

  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const code = raw.charCodeAt(i);
    if (code === 37 /* % */) {
      const hi = i + 2 < raw.length ? hexValue(raw.charCodeAt(i + 1)) : -1;
      const lo = hi < 0 ? -1 : hexValue(raw.charCodeAt(i + 2));
      if (lo < 0) return { ok: false, reason: 'invalid percent-encoding in path' };
      const value = hi * 16 + lo;
      i += 2;
      if (value === 0) return { ok: false, reason: 'NUL in path' };
      if (isUnreserved(value)) {
        decoded += String.fromCharCode(value);
      } else if ((value === 0x2f || value === 0x5c) && opts.encodedSeparators !== 'keep') {
        return { ok: false, reason: `encoded ${value === 0x2f ? '"/" (%2F)' : '"\\" (%5C)'} in path` };
      } else {
        decoded += `%${HEX[hi]}${HEX[lo]}`;
      }
      continue;
    }
    if (code <= 0x20 || code === 0x7f) return { ok: false, reason: code === 0 ? 'NUL in path' : 'control character or space in path' };
    if (code > 0x7f) return { ok: false, reason: 'character outside ASCII in path (percent-encode it)' };
    if (code === 92 /* \ */) return { ok: false, reason: 'backslash in path' };
    if (code === 35 /* # */) return { ok: false, reason: 'fragment (#) in path' };
    decoded += raw[i];
  }
  // Checked on the decoded text: `%25%32e` becomes `%252e` only after decoding.
  if (DOUBLE_ENCODED.test(decoded)) return { ok: false, reason: 'double-encoded character in path' };
  if (!escapesAreUtf8(decoded)) return { ok: false, reason: 'percent-encoded bytes in path are not UTF-8 (e.g. an overlong encoding)' };

  const segments = decoded.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  // segments[0] is the empty string before the leading "/".
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    if (segment === '' || segment === '.') {
      trailingSlash = last;
    } else if (segment === '..') {
      out.pop();
      trailingSlash = last;
    } else {
      const semicolon = segment.indexOf(';');
      if (semicolon >= 0) {
        const name = segment.slice(0, semicolon);
        if (name === '.' || name === '..') return { ok: false, reason: 'dot segment with ";" parameters in path' };
      }
      out.push(segment);
      trailingSlash = false;
    }
  }
  if (out.length === 0) return { ok: true, path: '/' };
  return { ok: true, path: `/${out.join('/')}${trailingSlash ? '/' : ''}` };
}

/**
 * The path policies match: a normalized path with `;` parameters removed from
 * each segment (`/admin;jsessionid=1/x` -> `/admin/x`), segments left empty
 * merged away as normalization merges them. Servers that honour parameters
 * route on this path; servers that do not see a path no rule allowed by name.
 */
export function pathForMatching(path: string): string {
  if (path.indexOf(';') < 0) return path;
  const segments = path.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const semicolon = segment.indexOf(';');
    const name = semicolon < 0 ? segment : segment.slice(0, semicolon);
    if (name === '') {
      trailingSlash = i === segments.length - 1;
    } else {
      out.push(name);
      trailingSlash = false;
    }
  }
  if (out.length === 0) return '/';
  return `/${out.join('/')}${trailingSlash ? '/' : ''}`;
}
