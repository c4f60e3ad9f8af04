import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext, UpstreamRequestEdits } from '../../core/call-context.ts';

/** One place a bearer credential may travel. Header names are lower-case. */
export type TokenLocation =
  | { readonly kind: 'header'; readonly name: string; readonly prefix: string | undefined }
  | { readonly kind: 'cookie'; readonly name: string }
  | { readonly kind: 'param'; readonly name: string };

export interface FoundToken {
  readonly token: string;
  /** Key of the location it was read from (see `locationKey`). */
  readonly location: string;
}

export interface TokenLocations {
  /** Every credential the call carries in a known location, in location order (duplicates included). */
  find(call: CallContext): FoundToken[];
  /** Records the edits that take these credentials out of the request to the app. */
  strip(call: CallContext, found: readonly FoundToken[], edits: UpstreamRequestEdits): void;
}

/** Stable identity of a location; header prefixes compare case-insensitively (RFC 9110 §11.1: auth schemes are). */
export function locationKey(location: TokenLocation): string {
  return location.kind === 'header' ? `header:${location.name}:${(location.prefix ?? '').toLowerCase()}` : `${location.kind}:${location.name}`;
}

/**
 * Finds tokens in headers (after an optional prefix such as `Bearer `), cookies
 * and query parameters, and removes them again for the app. A header present
 * without the prefix (e.g. `Authorization: Basic ...`) carries no token here.
 */
export function createTokenLocations(locations: readonly TokenLocation[]): TokenLocations {
  const distinct = new Map<string, TokenLocation>();
  for (const location of locations) distinct.set(locationKey(location), location);
  const all = [...distinct.entries()];
  const wantsCookies = all.some(([, l]) => l.kind === 'cookie');
  const wantsParams = all.some(([, l]) => l.kind === 'param');

  return {
    find(call) {
      const found: FoundToken[] = [];
      const cookies = wantsCookies ? parseCookies(call.headers) : undefined;
      const params = wantsParams ? parseQuery(call.query) : undefined;
      for (const [key, location] of all) {
        if (location.kind === 'header') {
          const token = fromHeader(call.headers[location.name], location.prefix);
          if (token !== undefined) found.push({ token, location: key });
        } else {
          const pairs = location.kind === 'cookie' ? cookies! : params!;
          for (const [name, value] of pairs) if (name === location.name) found.push({ token: value, location: key });
        }
      }
      return found;
    },
    strip(call, found, edits) {
      const cookieNames = new Set<string>();
      const paramNames = new Set<string>();
      for (const { location: key } of found) {
        const location = distinct.get(key);
        if (!location) continue;
        if (location.kind === 'header') edits.removeHeaders.push(location.name);
        else (location.kind === 'cookie' ? cookieNames : paramNames).add(location.name);
      }
      if (cookieNames.size > 0) {
        const kept = rawCookieHeader(call.headers)
          .split(';')
          .map((part) => part.trim())
          .filter((part) => part !== '' && !cookieNames.has(pairName(part).trim()));
        // Removals apply before sets: the rewritten header replaces the caller's.
        edits.removeHeaders.push('cookie');
        if (kept.length > 0) edits.setHeaders.cookie = kept.join('; ');
      }
      if (paramNames.size > 0) {
        edits.query = (edits.query ?? call.query)
          .split('&')
          .filter((part) => part !== '' && !paramNames.has(decodeFormPart(pairName(part))))
          .join('&');
      }
    },
  };
}

/** The name of a `name=value` pair (the whole text without `=`). */
function pairName(part: string): string {
  const eq = part.indexOf('=');
  return eq < 0 ? part : part.slice(0, eq);
}

function fromHeader(value: string | string[] | undefined, prefix: string | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  if (prefix === undefined || prefix === '') return value.trim();
  if (value.length < prefix.length || value.slice(0, prefix.length).toLowerCase() !== prefix.toLowerCase()) return undefined;
  return value.slice(prefix.length).trim();
}

function rawCookieHeader(headers: IncomingHttpHeaders): string {
  const value = headers.cookie as string | string[] | undefined;
  return Array.isArray(value) ? value.join('; ') : (value ?? '');
}

/** RFC 6265 §4.2 `name=value` pairs; a quoted value loses its quotes. */
function parseCookies(headers: IncomingHttpHeaders): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const part of rawCookieHeader(headers).split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    pairs.push([part.slice(0, eq).trim(), value]);
  }
  return pairs;
}

function parseQuery(query: string): Array<[string, string]> {
  if (query === '') return [];
  const pairs: Array<[string, string]> = [];
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    pairs.push(eq < 0 ? [decodeFormPart(part), ''] : [decodeFormPart(part.slice(0, eq)), decodeFormPart(part.slice(eq + 1))]);
  }
  return pairs;
}

/** Form decoding that never throws: a malformed escape leaves the text as it was. */
function decodeFormPart(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
}
