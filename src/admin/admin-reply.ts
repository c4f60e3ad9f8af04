import type { IncomingMessage, ServerResponse } from 'node:http';

/** A path the admin listener routes itself: the methods it takes (405 with `Allow` for the others) and its answer. */
export interface AdminRoute {
  readonly methods: readonly string[];
  handle(req: IncomingMessage, res: ServerResponse, path: string): void;
}

/**
 * The admin listener's own refusals, in the shape of every admin error:
 * `{code, reason}` as JSON with `x-meshgate-reason`. The policy server's
 * admin API adds its codes to these (policy-server/admin-errors.ts).
 */
export const ADMIN_LISTENER_ERRORS = {
  'admin.not_found': { http: 404, description: 'No such document, or no such admin path.' },
  'admin.method_not_allowed': { http: 405, description: 'The path exists but not with this method; `Allow` lists the methods.' },
} as const satisfies Record<string, { http: number; description: string }>;

/** An admin error: `{code, reason, ...extra}` as JSON, the code also in `x-meshgate-reason`. */
export function sendErrorBody(res: ServerResponse, status: number, code: string, reason: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  sendJson(res, status, { code, reason, ...extra }, { ...headers, 'x-meshgate-reason': code });
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
