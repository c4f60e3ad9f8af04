import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions, TlsOptions } from 'node:tls';
import type { Registry } from 'prom-client';
import { listenOn } from '../core/listen.ts';

export interface ReadinessReport {
  readonly ready: boolean;
  readonly checks: Readonly<Record<string, string>>;
}

/** A mounted handler answers the requests it knows and returns false for the rest (the admin API's shape). */
export type MountedHandler = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

export interface PolicyAdminListenerOptions {
  readiness(): ReadinessReport;
  /** Effective configuration and state; never a key or a token. */
  configDump(): unknown;
  readonly registry: Registry;
  /** The admin API (/api/v1/...), mounted after the built-in paths. */
  readonly mount?: MountedHandler;
  /** TLS options (adminTlsServerOptions of admin-auth.ts); plain HTTP when absent. */
  readonly tls?: TlsOptions;
}

export interface PolicyAdminListener {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Swaps a rotated certificate into the TLS listener; open connections keep theirs. */
  updateTls(context: SecureContextOptions): void;
  close(): Promise<void>;
}

const BUILT_IN = new Set(['/live', '/ready', '/metrics', '/config_dump']);

/**
 * The policy server's admin listener: /live, /ready, /metrics and
 * /config_dump (as every role has), and the admin API mounted on the same
 * port. Built in here rather than in src/admin/admin-server.ts because the
 * admin API needs methods other than GET and, over TLS, the caller's
 * client certificate.
 */
export function createPolicyAdminListener(opts: PolicyAdminListenerOptions): PolicyAdminListener {
  const limits = { maxHeaderSize: 16_384, requestTimeout: 30_000, headersTimeout: 10_000 };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (BUILT_IN.has(path)) return builtIn(path, req, res);
    if (opts.mount?.(req, res)) return;
    reply(res, 404, 'text/plain', 'not found\n');
  };
  const builtIn = (path: string, req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'method not allowed\n', { allow: 'GET, HEAD' });
    switch (path) {
      case '/live':
        return reply(res, 200, 'text/plain', 'live\n');
      case '/ready': {
        const report = opts.readiness();
        return reply(res, report.ready ? 200 : 503, 'application/json', JSON.stringify(report));
      }
      case '/metrics':
        opts.registry.metrics().then(
          (text) => reply(res, 200, opts.registry.contentType, text),
          () => reply(res, 500, 'text/plain', 'metrics unavailable\n'),
        );
        return;
      default:
        return reply(res, 200, 'application/json', JSON.stringify(opts.configDump(), null, 2));
    }
  };
  const server = opts.tls ? https.createServer({ ...opts.tls, ...limits }, handler) : http.createServer(limits, handler);
  return {
    listen: (port, host) => listenOn(server, port, host),
    updateTls(context) {
      if (server instanceof https.Server) server.setSecureContext(context);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function reply(res: http.ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
