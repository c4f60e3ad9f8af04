import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 connection-specific fields, plus the legacy proxy ones. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * What nearly every message's `Connection` says, as the set connectionListed makes of it: one shared
 * set each instead of a split, a trim and a set per message (every keep-alive response of a Node app
 * says `keep-alive`). Never changed: only read with `has`.
 */
const KEEP_ALIVE_LISTED: ReadonlySet<string> = new Set(['keep-alive']);
const CLOSE_LISTED: ReadonlySet<string> = new Set(['close']);

/** Names listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1). */
function connectionListed(value: string | undefined): ReadonlySet<string> | undefined {
  if (!value) return undefined;
  if (value.length === 10 && value.toLowerCase() === 'keep-alive') return KEEP_ALIVE_LISTED;
  if (value.length === 5 && value.toLowerCase() === 'close') return CLOSE_LISTED;
  return new Set(
    value
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

export interface ForwardedFacts {
  readonly clientAddress: string;
  readonly proto: 'http' | 'https';
  readonly requestId: string;
  readonly authority: string;
}

/**
 * Headers sent upstream: hop-by-hop and pseudo headers dropped, `host` carrying
 * the original authority, `x-forwarded-for` and `forwarded` appended,
 * `x-request-id` set. `te: trailers` survives because gRPC over HTTP/2 needs it.
 * Names in `omit` and `alsoOmit` (a call's own removals: lower-case, usually one
 * or two) are not copied: a caller's value the sidecar must not pass on is left
 * out here rather than deleted afterwards, since deleting a property that is not
 * the last one added turns the object into a slower dictionary-mode map, which
 * the request head then walks on every call.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, facts: ForwardedFacts, omit?: ReadonlySet<string>, alsoOmit?: readonly string[]): Record<string, string | string[]> {
  const listed = connectionListed(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    if (HOP_BY_HOP.has(name) || listed?.has(name) || name === 'expect' || omit?.has(name) || alsoOmit?.includes(name)) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  // `expect` is not forwarded: node:http answers `Expect: 100-continue` itself (the caller sends its body
  // on the sidecar's 100) and refuses any other expectation with 417, as Envoy does by default.
  if (typeof headers.te === 'string' && /(^|,)\s*trailers\s*(,|$)/i.test(headers.te)) out.te = 'trailers';
  out.host = facts.authority;
  out['x-request-id'] = facts.requestId;
  const xff = headers['x-forwarded-for'];
  out['x-forwarded-for'] = xff ? `${xff}, ${facts.clientAddress}` : facts.clientAddress;
  out['x-forwarded-proto'] = typeof headers['x-forwarded-proto'] === 'string' ? headers['x-forwarded-proto'] : facts.proto;
  const forwardedFor = facts.clientAddress.includes(':') ? `"[${facts.clientAddress}]"` : facts.clientAddress;
  const element = `for=${forwardedFor};proto=${facts.proto}`;
  out.forwarded = headers.forwarded ? `${headers.forwarded}, ${element}` : element;
  return out;
}

/** Response headers safe to relay on either protocol (HTTP/2 forbids connection headers). */
export function downstreamResponseHeaders(headers: Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const listed = typeof headers.connection === 'string' ? connectionListed(headers.connection) : undefined;
  const out: OutgoingHttpHeaders = {};
  // for-in, not Object.keys: no array per call (two per response: its head and its trailers).
  for (const name in headers) {
    if (name.charCodeAt(0) === 58) continue;
    if (HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Keeps a caller's request id when it is sane; otherwise makes one with `newId` (./request-ids.ts). */
export function requestIdOf(headers: IncomingHttpHeaders, newId: () => string): string {
  const given = headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : newId();
}

/** Authority of a request: `:authority` (HTTP/2) or `host` (HTTP/1.1). */
export function authorityOf(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[':authority'] ?? headers.host;
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return typeof type === 'string' && type.startsWith('application/grpc');
}

/** A route's or a filter's header changes: removals first, so a change can replace what the caller sent. */
export interface HeaderMutation {
  readonly set: Readonly<Record<string, string>>;
  readonly add: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
}

/** Applies set/add/remove to a plain header object, in that order. */
export function mutateHeaders(headers: Record<string, string | string[] | number | undefined>, mutation: HeaderMutation): void {
  for (const name of mutation.remove) delete headers[name.toLowerCase()];
  for (const [name, value] of Object.entries(mutation.set)) headers[name.toLowerCase()] = value;
  for (const [name, value] of Object.entries(mutation.add)) {
    const key = name.toLowerCase();
    const existing = headers[key];
    if (existing === undefined) headers[key] = value;
    else if (Array.isArray(existing)) headers[key] = [...existing, value];
    else headers[key] = [String(existing), value];
  }
}
