import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ReasonCode } from '../core/reason-codes.ts';
import { reasonCode } from '../core/reason-codes.ts';

/** A path the admin listener routes itself: the methods it takes (405 with `Allow` for the others) and its answer. */
export interface AdminRoute {
  readonly methods: readonly string[];
  /** Answered only to loopback callers (403 admin.local_only otherwise): what dumps the config or lifts bans stays on the pod, however wide the listener is bound. */
  readonly localOnly?: boolean;
  handle(req: IncomingMessage, res: ServerResponse, path: string): void;
}

/**
 * An admin error, in the shape of every admin API's: `{code, reason, ...extra}`
 * as JSON with the code's status (the `admin` section of src/core/reason-codes.ts),
 * the code also in `x-meshgate-reason`.
 */
export function sendAdminError(res: ServerResponse, code: ReasonCode<'admin'>, reason: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  sendJson(res, reasonCode(code).http, { code, reason, ...extra }, { ...headers, 'x-meshgate-reason': code });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendText(res, status, 'application/json', `${JSON.stringify(body, null, 2)}\n`, headers);
}

/** The one writer of admin replies: never cached; a reply that already started can only be cut. */
export function sendText(res: ServerResponse, status: number, type: string, text: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}
