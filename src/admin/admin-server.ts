import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { listenOn } from '../core/listen.ts';

export interface ReadinessReport {
  readonly ready: boolean;
  /** Each check by name: `ok`, or what is missing. */
  readonly checks: Readonly<Record<string, string>>;
}

export interface AdminDeps {
  /** `skipApp`: `/ready?skip=app`, readiness without the local app (a native sidecar's startup probe: the app starts after it). */
  readiness(opts?: { readonly skipApp: boolean }): Promise<ReadinessReport>;
  /** Effective configuration and state; must never contain a key or a token. */
  configDump(): unknown;
  readonly registry: Registry;
  /** The sidecar's auto-ban list: `GET /bans`, `DELETE /bans/{address}`. Absent: those paths are 404. */
  readonly bans?: BanAdmin;
}

export interface BanAdmin {
  /** Live bans as JSON values (`{address, until, reason, count}`). */
  list(): readonly unknown[];
  /** Lifts one ban; `address` as the operator wrote it. */
  remove(address: string): { readonly status: 'removed'; readonly ban: unknown } | { readonly status: 'not_found' | 'invalid' };
}

export interface AdminServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** The admin listener every role has: /live, /ready, /metrics, /config_dump (and /bans on a sidecar). */
export function createAdminServer(deps: AdminDeps): AdminServer {
  const server = http.createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (deps.bans && path.startsWith('/bans/') && req.method === 'DELETE') return deleteBan(deps.bans, path.slice('/bans/'.length), req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/live':
        return reply(res, 200, 'text/plain', 'live\n');
      case '/ready':
        deps.readiness({ skipApp: new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('skip') === 'app' }).then(
          (report) => reply(res, report.ready ? 200 : 503, 'application/json', JSON.stringify(report)),
          (err: unknown) => reply(res, 503, 'application/json', JSON.stringify({ ready: false, checks: { readiness: String(err) } })),
        );
        return;
      case '/metrics':
        deps.registry.metrics().then(
          (text) => reply(res, 200, deps.registry.contentType, text),
          () => reply(res, 500, 'text/plain', 'metrics unavailable\n'),
        );
        return;
      case '/config_dump':
        return reply(res, 200, 'application/json', JSON.stringify(deps.configDump(), null, 2));
      case '/bans':
        if (!deps.bans) return reply(res, 404, 'text/plain', 'not found\n');
        return reply(res, 200, 'application/json', JSON.stringify(deps.bans.list()));
      default:
        return reply(res, 404, 'text/plain', 'not found\n');
    }
  });
  return {
    listen: (port, host) => listenOn(server, port, host),
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The one state-changing admin route. The listener is loopback by default;
 * on top of that a browser is turned away (it sends Origin on a DELETE), so a
 * web page open on the host cannot lift bans through it.
 */
function deleteBan(bans: BanAdmin, encoded: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.headers.origin !== undefined) return reply(res, 403, 'application/json', JSON.stringify({ error: 'requests from a browser are refused' }));
  let address: string;
  try {
    address = decodeURIComponent(encoded);
  } catch {
    return reply(res, 400, 'application/json', JSON.stringify({ error: 'expected /bans/{address}' }));
  }
  const result = bans.remove(address);
  if (result.status === 'removed') return reply(res, 200, 'application/json', JSON.stringify(result.ban));
  if (result.status === 'invalid') return reply(res, 400, 'application/json', JSON.stringify({ error: `not an IP address: ${address}` }));
  return reply(res, 404, 'application/json', JSON.stringify({ error: `${address} is not banned` }));
}

function reply(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}
