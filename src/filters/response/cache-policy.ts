import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/*
 * RFC 9111 as a shared cache reads it, for the inbound response cache: what
 * a request allows (may it be served from the cache, may its answer be
 * stored) and how long a response stays fresh. The cache never revalidates
 * and never serves stale: what is not fresh goes to the app. Pure functions
 * of headers and times, so a fake clock tests them.
 */

/** Statuses a shared cache may store (RFC 9110 §15.1 "heuristically cacheable"); meshgate stores them only with explicit freshness. */
const STORABLE_STATUSES = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);

export type Directives = ReadonlyMap<string, string | undefined>;

const NONE: Directives = new Map();

/** `Cache-Control` directives, names lower-cased; a quoted argument unquoted. Repeated fields join (RFC 9110 §5.3). */
export function parseCacheControl(value: string | string[] | number | undefined): Directives {
  if (value === undefined) return NONE;
  const text = Array.isArray(value) ? value.join(',') : String(value);
  const out = new Map<string, string | undefined>();
  // A quoted argument may hold commas (private="a, b"): split outside quotes only.
  for (const match of text.matchAll(/\s*([^=,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)/g)) {
    const name = match[1]!.toLowerCase();
    const raw = match[2]?.trim();
    const arg = raw?.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
    // RFC 9111 §4.2.1: a directive given twice is invalid; the most restrictive reading is the first one kept.
    if (!out.has(name)) out.set(name, arg);
  }
  return out;
}

/** Seconds of a delta-seconds argument; undefined when absent or not one (RFC 9111 §1.2.2: then it is invalid). */
function deltaSeconds(directives: Directives, name: string): number | undefined {
  if (!directives.has(name)) return undefined;
  const arg = directives.get(name);
  if (arg === undefined || !/^\d+$/.test(arg)) return undefined;
  // Beyond 2^31 is "infinity" (§1.2.2); a year is plenty for a sidecar's memory.
  return Math.min(Number(arg), 2_147_483_648);
}

export type RequestDecision =
  /** May be served from the cache and its answer stored. */
  | { readonly kind: 'lookup' }
  /** Go to the app; its answer may be stored (a refresh: `no-cache`, `max-age=0`). */
  | { readonly kind: 'refresh'; readonly reason: string }
  /** Go to the app; nothing stored. */
  | { readonly kind: 'bypass'; readonly reason: string };

const LOOKUP: RequestDecision = Object.freeze({ kind: 'lookup' });

/** What the request lets the cache do (RFC 9111 §5.2.1); the caller's identity is checked elsewhere. */
export function requestDecision(method: string, headers: IncomingHttpHeaders): RequestDecision {
  if (method !== 'GET' && method !== 'HEAD') return { kind: 'bypass', reason: 'method' };
  // A conditional or ranged request wants a 304 or 206 the cache does not make: the app answers it.
  if (headers.range !== undefined) return { kind: 'bypass', reason: 'range' };
  if (headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined) return { kind: 'bypass', reason: 'conditional' };
  const cc = parseCacheControl(headers['cache-control']);
  if (cc.has('no-store')) return { kind: 'bypass', reason: 'request_no_store' };
  if (cc.has('no-cache') || deltaSeconds(cc, 'max-age') === 0) return { kind: 'refresh', reason: 'request_no_cache' };
  // RFC 9111 §5.4: Pragma: no-cache counts only without Cache-Control.
  if (headers['cache-control'] === undefined && typeof headers.pragma === 'string' && /(^|,)\s*no-cache\s*(,|$)/i.test(headers.pragma)) return { kind: 'refresh', reason: 'request_no_cache' };
  return LOOKUP;
}

/** What to keep of a response, or why not. */
export type StoreDecision =
  | { readonly kind: 'store'; readonly lifetimeMs: number; readonly initialAgeMs: number; readonly vary: readonly string[] }
  | { readonly kind: 'skip'; readonly reason: string };

/**
 * Whether a shared cache may store this response (RFC 9111 §3) and for how
 * long it is fresh (§4.2.1): s-maxage, else max-age, else Expires minus Date.
 * Only explicit freshness is stored: no heuristic lifetimes. `no-cache` is
 * not stored (it would need revalidation, which this cache does not do);
 * must-revalidate and proxy-revalidate only forbid serving stale, which this
 * cache never does. A Set-Cookie response is never stored: it belongs to one caller.
 * A request with credentials reaches this only when its route caches them
 * per caller (cacheAuthenticated): its key holds the caller, so §3.5's
 * stricter rule for shared answers to such requests is not needed.
 */
export function storeDecision(status: number, headers: OutgoingHttpHeaders, receivedAtMs: number): StoreDecision {
  if (!STORABLE_STATUSES.has(status)) return { kind: 'skip', reason: 'status' };
  const cc = parseCacheControl(headers['cache-control']);
  if (cc.has('no-store')) return { kind: 'skip', reason: 'no_store' };
  if (cc.has('private')) return { kind: 'skip', reason: 'private' };
  if (cc.has('no-cache')) return { kind: 'skip', reason: 'no_cache' };
  if (headers['set-cookie'] !== undefined) return { kind: 'skip', reason: 'set_cookie' };
  const vary = varyNames(headers.vary);
  if (vary === '*') return { kind: 'skip', reason: 'vary_star' };
  const dateMs = httpDate(headers.date);
  const lifetimeSeconds = freshnessLifetime(cc, headers, dateMs ?? receivedAtMs);
  if (lifetimeSeconds === undefined) return { kind: 'skip', reason: 'no_freshness' };
  if (lifetimeSeconds <= 0) return { kind: 'skip', reason: 'stale' };
  // §4.2.3: the age it arrived with, at least the time since its Date (a Date in the future counts 0).
  const ageHeader = Number(headers.age);
  const apparentMs = dateMs === undefined ? 0 : Math.max(0, receivedAtMs - dateMs);
  const initialAgeMs = Math.max(apparentMs, Number.isFinite(ageHeader) && ageHeader > 0 ? ageHeader * 1000 : 0);
  if (initialAgeMs >= lifetimeSeconds * 1000) return { kind: 'skip', reason: 'stale' };
  return { kind: 'store', lifetimeMs: lifetimeSeconds * 1000, initialAgeMs, vary };
}

function freshnessLifetime(cc: Directives, headers: OutgoingHttpHeaders, dateMs: number): number | undefined {
  const shared = deltaSeconds(cc, 's-maxage');
  if (shared !== undefined) return shared;
  const maxAge = deltaSeconds(cc, 'max-age');
  if (maxAge !== undefined) return maxAge;
  if (headers.expires === undefined) return undefined;
  // §5.3: an invalid Expires (0, garbage) means already expired. Without Date, the time it was received stands in (§4.2.1).
  const expires = httpDate(headers.expires);
  if (expires === undefined) return 0;
  return Math.floor((expires - dateMs) / 1000);
}

/** The header names of Vary, lower-cased and sorted, or `*`. */
export function varyNames(value: string | string[] | number | undefined): readonly string[] | '*' {
  if (value === undefined) return [];
  const names = (Array.isArray(value) ? value.join(',') : String(value))
    .split(',')
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n.length > 0);
  if (names.includes('*')) return '*';
  return [...new Set(names)].sort();
}

/** The request's values of the Vary headers, one string (absent differs from empty). */
export function varyValues(names: readonly string[], headers: IncomingHttpHeaders): string {
  let out = '';
  for (const name of names) {
    const value = headers[name];
    out += value === undefined ? '\u0000' : `=${Array.isArray(value) ? value.join(', ') : value.trim()}`;
    out += '\u0001';
  }
  return out;
}

/** Milliseconds since the epoch of an HTTP-date (IMF-fixdate and the obsolete forms Date.parse reads); undefined when invalid. */
function httpDate(value: string | string[] | number | undefined): number | undefined {
  if (typeof value !== 'string' || value.length > 64) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}
