import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { RespondVerdict } from '../core/verdict.ts';
import { reasonCode } from './reason-codes.ts';

export type AnyResponse = ServerResponse | Http2ServerResponse;

/**
 * The one place that turns a deny or an error into bytes on the wire.
 * gRPC callers get a trailers-only reply (HTTP 200 + grpc-status) because a
 * gRPC client ignores HTTP bodies; everyone else gets JSON.
 */
export function sendVerdict(
  res: AnyResponse,
  verdict: RespondVerdict,
  opts: { grpc: boolean; requestId: string },
): void {
  if (res.headersSent) {
    // The response already started: the only honest signal left is a reset.
    res.destroy();
    return;
  }
  const mapping = reasonCode(verdict.code);
  const extra = verdict.headers ?? {};
  for (const [name, value] of Object.entries(extra)) res.setHeader(name, value);
  res.setHeader('x-meshgate-reason', verdict.code);
  res.setHeader('x-request-id', opts.requestId);
  if (opts.grpc) {
    res.statusCode = 200;
    res.setHeader('content-type', 'application/grpc');
    res.setHeader('grpc-status', String(mapping.grpc));
    res.setHeader('grpc-message', encodeURIComponent(`${verdict.code}: ${verdict.reason}`));
    res.end();
    return;
  }
  const body = JSON.stringify({
    code: verdict.code,
    reason: verdict.reason,
    ...(verdict.rule ? { rule: verdict.rule } : {}),
    request_id: opts.requestId,
  });
  res.statusCode = mapping.http;
  res.setHeader('content-type', 'application/json');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}
