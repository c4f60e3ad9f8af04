import type { Http2ServerRequest } from 'node:http2';
import type { Readable } from 'node:stream';
import type { CallContext, Direction, RequestBody } from '../core/call-context.ts';
import { normalizePath } from '../core/path-normalize.ts';
import { authorityOf, isGrpcRequest, requestIdOf } from './headers.ts';
import type { DownstreamRequest } from './listener.ts';

export interface RequestTarget {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly authority: string;
}

/** Why a request never became a call: answered with this reason code (400, or 501 for a form meshgate does not forward). */
export interface TargetRefusal {
  readonly code: 'request.malformed' | 'request.invalid_path' | 'request.unsupported';
  readonly reason: string;
}

/**
 * A host name, an IPv4 address or a bracketed IPv6 address, with an optional
 * port: what meshgate routes by. Stricter than RFC 3986's reg-name on purpose:
 * a comma or a space is how two Host headers merged into one look.
 */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253})(?::[0-9]{1,5})?$/;

/**
 * Fields named `lowerName` in the raw head. Host and Authorization hold one
 * value each (RFC 9112 §3.2, RFC 9110 §11.6.2), so two are malformed, whatever
 * node made of them: HTTP/1.1 joins them with a comma, but HTTP/2 keeps the
 * first Authorization and silently drops the rest, so a token the caller sent
 * beside another would be verified alone.
 */
function fieldCount(req: DownstreamRequest, lowerName: string): number {
  let count = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) count++;
  }
  return count;
}

/**
 * Reads method, path, query and authority from either codec. Absolute-form
 * targets (`GET http://orders/x`, an app using us as an HTTP proxy) take their
 * authority from the URL, as RFC 9112 §3.2.2 requires, and their path as sent
 * (a URL parser would resolve dots and turn `\` into `/` before we could refuse it).
 * The path is normalized here, once (./path-normalize.ts): filters match it
 * and both stacks forward it, so the two never differ.
 */
export function readRequestTarget(req: DownstreamRequest): RequestTarget | TargetRefusal {
  const malformed = (reason: string): TargetRefusal => ({ code: 'request.malformed', reason });
  const method = req.method ?? 'GET';
  if (!/^[A-Z][A-Z0-9-]{0,31}$/.test(method)) return malformed('invalid method');
  let url = req.url ?? '';
  if (fieldCount(req, 'host') > 1) return malformed('more than one Host header');
  if (fieldCount(req, 'authorization') > 1) return malformed('more than one Authorization header');
  const h2Host = req.headers[':authority'] !== undefined ? req.headers.host : undefined;
  // RFC 9113 §8.3.1: a Host header naming another authority than :authority makes the request malformed.
  if (h2Host !== undefined && h2Host !== req.headers[':authority']) return malformed('Host header differs from :authority');
  let authority = authorityOf(req.headers);
  if (!url.startsWith('/')) {
    const absolute = /^https?:\/\/([^/?#\\]*)(.*)$/is.exec(url);
    if (absolute) {
      try {
        authority = new URL(`http://${absolute[1]}`).host;
      } catch {
        return malformed('unparseable absolute-form request target');
      }
      const rest = absolute[2]!;
      url = rest.startsWith('/') ? rest : `/${rest}`;
    } else if (url === '*' && method === 'OPTIONS') {
      // Asterisk-form asks about the server as a whole (RFC 9110 §9.3.7): there is no resource to route or forward it to.
      return { code: 'request.unsupported', reason: 'OPTIONS * is not forwarded' };
    } else {
      return malformed('request target must start with /');
    }
  }
  if (!authority) return malformed('missing authority (Host header)');
  // The reason never repeats the value: callers must not get their own input reflected.
  if (!AUTHORITY.test(authority)) return malformed('authority (Host header) is not a host name or address with an optional port');
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const normalized = normalizePath(rawPath);
  if (!normalized.ok) return { code: 'request.invalid_path', reason: normalized.reason };
  // As in the path: HTTP/2 lets bytes through in `:path` that no HTTP/1.1 request line may carry.
  if (q >= 0 && /[^\x21-\x7e]/.test(url.slice(q + 1))) return malformed('control character, space or character outside ASCII in the query');
  return {
    method,
    path: normalized.path,
    query: q < 0 ? '' : url.slice(q + 1),
    authority,
  };
}

/** The body to forward, or null when the request has none (so it can be retried freely). */
export function requestBody(req: DownstreamRequest): Readable | null {
  if (req.httpVersion === '2.0') {
    return (req as Http2ServerRequest).stream.endAfterHeaders ? null : (req as unknown as Readable);
  }
  const h1 = req as Exclude<DownstreamRequest, Http2ServerRequest>;
  if (h1.headers['transfer-encoding'] !== undefined) return h1;
  const length = h1.headers['content-length'];
  return length === undefined || length === '0' ? null : h1;
}

export function createCallContext(
  req: DownstreamRequest,
  target: RequestTarget,
  opts: {
    direction: Direction;
    startedAt: number;
    destination: { service: string; namespace: string };
    principal: string | undefined;
    /** The body accessor (./request-body.ts); the stack forwards what it hands back. */
    body?: RequestBody;
    /** Makes the request id of a call that brings none (the stack's ./request-ids.ts). */
    newRequestId: () => string;
  },
): CallContext {
  return {
    id: requestIdOf(req.headers, opts.newRequestId),
    direction: opts.direction,
    startedAt: opts.startedAt,
    method: target.method,
    path: target.path,
    query: target.query,
    authority: target.authority,
    headers: req.headers,
    httpVersion: req.httpVersion === '2.0' ? '2' : '1.1',
    isGrpc: isGrpcRequest(req.headers),
    source: {
      address: req.socket?.remoteAddress ?? '',
      port: req.socket?.remotePort ?? 0,
      principal: opts.principal,
    },
    destination: opts.destination,
    annotations: { retries: 0 },
    body: opts.body,
  };
}

export function pathWithQuery(call: CallContext): string {
  return call.query === '' ? call.path : `${call.path}?${call.query}`;
}
