import type http from 'node:http';
import type { AdminRoute } from './admin-reply.ts';
import { sendText } from './admin-reply.ts';

export interface BanAdmin {
  /** Live bans as JSON values (`{address, until, reason, count}`); a sidecar primary asks its workers (a promise). */
  list(): readonly unknown[] | Promise<readonly unknown[]>;
  /** Lifts one ban; `address` as the operator wrote it. */
  remove(address: string): BanRemoval | Promise<BanRemoval>;
}

type BanRemoval = { readonly status: 'removed'; readonly ban: unknown } | { readonly status: 'not_found' | 'invalid' };

/** The sidecar's ban paths: `GET /bans` and `DELETE /bans/{address}`; undefined for any other path. */
export function banRoutes(bans: BanAdmin): (path: string) => AdminRoute | undefined {
  const list: AdminRoute = {
    methods: ['GET', 'HEAD'],
    localOnly: true,
    handle: (_req, res) =>
      void Promise.resolve()
        .then(() => bans.list())
        .then(
          (all) => sendJsonLine(res, 200, all),
          (err: unknown) => sendJsonLine(res, 503, { error: `bans unavailable: ${(err as Error).message}` }),
        ),
  };
  const one: AdminRoute = { methods: ['DELETE'], localOnly: true, handle: (req, res, path) => deleteBan(bans, path.slice('/bans/'.length), req, res) };
  return (path) => (path === '/bans' ? list : path.startsWith('/bans/') ? one : undefined);
}

/**
 * The one state-changing admin route. The listener is loopback by default;
 * on top of that a browser is turned away (it sends Origin on a DELETE), so a
 * web page open on the host cannot lift bans through it.
 */
function deleteBan(bans: BanAdmin, encoded: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.headers.origin !== undefined) return sendJsonLine(res, 403, { error: 'requests from a browser are refused' });
  let address: string;
  try {
    address = decodeURIComponent(encoded);
  } catch {
    return sendJsonLine(res, 400, { error: 'expected /bans/{address}' });
  }
  void Promise.resolve()
    .then(() => bans.remove(address))
    .then(
      (result) => {
        if (result.status === 'removed') return sendJsonLine(res, 200, result.ban);
        if (result.status === 'invalid') return sendJsonLine(res, 400, { error: `not an IP address: ${address}` });
        return sendJsonLine(res, 404, { error: `${address} is not banned` });
      },
      (err: unknown) => sendJsonLine(res, 503, { error: `bans unavailable: ${(err as Error).message}` }),
    );
}

function sendJsonLine(res: http.ServerResponse, status: number, body: unknown): void {
  sendText(res, status, 'application/json', JSON.stringify(body));
}
