import { reasonCode } from '../core/reason-codes.ts';
import type { RespondVerdict } from '../core/verdict.ts';

/** What a reply is written with: node's ServerResponse and Http2ServerResponse, and the listener's own HTTP/1.1 response (src/proxy/h1-server-response.ts). */
export interface AnyResponse {
  readonly headersSent: boolean;
  statusCode: number;
  setHeader(name: string, value: string | number): unknown;
  end(): unknown;
  end(body: string): unknown;
  destroy(): unknown;
}

/**
 * The one place that turns a deny or an error into bytes on the wire.
 * gRPC callers get a trailers-only reply (HTTP 200 + grpc-status) because a
 * gRPC client ignores HTTP bodies; everyone else gets JSON.
 */
export function sendVerdict(res: AnyResponse, verdict: RespondVerdict, opts: { grpc: boolean; requestId: string }): void {
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
  if (verdict.decisionId) res.setHeader('x-meshgate-decision-id', verdict.decisionId);
  if (opts.grpc) {
    res.statusCode = 200;
    res.setHeader('content-type', 'application/grpc');
    res.setHeader('grpc-status', String(mapping.grpc));
    // A gRPC client shows only the message: the decision id must be in it to be quoted.
    const decision = verdict.decisionId ? ` (decision_id ${verdict.decisionId})` : '';
    res.setHeader('grpc-message', encodeURIComponent(`${verdict.code}: ${verdict.reason}${decision}`));
    res.end();
    return;
  }
  // Nothing of the policy beyond the deciding rule's name: callers must not learn the rules.
  const body = JSON.stringify({
    code: verdict.code,
    reason: verdict.reason,
    ...(verdict.decisionId ? { decision_id: verdict.decisionId } : {}),
    ...(verdict.rule ? { rule: verdict.rule } : {}),
    request_id: opts.requestId,
  });
  res.statusCode = verdict.status ?? mapping.http;
  res.setHeader('content-type', 'application/json');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}
