import type { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { CallContext, Direction } from '../core/call-context.ts';
import { authorityOf, isGrpcRequest, requestIdOf } from './headers.ts';
import type { DownstreamRequest } from './listener.ts';

export interface RequestTarget {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly authority: string;
}

/**
 * Reads method, path, query and authority from either codec. Absolute-form
 * targets (`GET http://orders/x`, an app using us as an HTTP proxy) take their
 * authority from the URL, as RFC 9112 §3.2.2 requires.
 */
export function readRequestTarget(req: DownstreamRequest): RequestTarget | string {
  const method = req.method ?? 'GET';
  if (!/^[A-Z][A-Z0-9-]{0,31}$/.test(method)) return 'invalid method';
  let url = req.url ?? '';
  let authority = authorityOf(req.headers);
  if (!url.startsWith('/')) {
    if (/^https?:\/\//i.test(url)) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return 'unparseable absolute-form request target';
      }
      authority = parsed.host;
      url = `${parsed.pathname}${parsed.search}`;
    } else if (!(url === '*' && method === 'OPTIONS')) {
      return 'request target must start with /';
    }
  }
  if (!authority) return 'missing authority (Host header)';
  const q = url.indexOf('?');
  return {
    method,
    path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? '' : url.slice(q + 1),
    authority,
  };
}

/** The body to forward, or null when the request has none (so it can be retried freely). */
export function requestBody(req: DownstreamRequest): Readable | null {
  if (req.httpVersion === '2.0') {
    return (req as Http2ServerRequest).stream.endAfterHeaders ? null : (req as unknown as Readable);
  }
  const h1 = req as IncomingMessage;
  if (h1.headers['transfer-encoding'] !== undefined) return h1;
  const length = h1.headers['content-length'];
  return length === undefined || length === '0' ? null : h1;
}

export function createCallContext(
  req: DownstreamRequest,
  target: RequestTarget,
  opts: { direction: Direction; startedAt: number; destination: { service: string; namespace: string }; principal: string | undefined },
): CallContext {
  return {
    id: requestIdOf(req.headers),
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
  };
}

export function pathWithQuery(call: CallContext): string {
  return call.query === '' ? call.path : `${call.path}?${call.query}`;
}
