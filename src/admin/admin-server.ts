import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface ReadinessReport {
  readonly ready: boolean;
  /** Each check by name: `ok`, or what is missing. */
  readonly checks: Readonly<Record<string, string>>;
}

export interface AdminDeps {
  readiness(): Promise<ReadinessReport>;
  /** Effective configuration and state; must never contain a key or a token. */
  configDump(): unknown;
  readonly registry: Registry;
}

export interface AdminServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** The admin listener every role has: /live, /ready, /metrics, /config_dump. */
export function createAdminServer(deps: AdminDeps): AdminServer {
  const server = http.createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/live':
        return reply(res, 200, 'text/plain', 'live\n');
      case '/ready':
        deps.readiness().then(
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
      default:
        return reply(res, 404, 'text/plain', 'not found\n');
    }
  });
  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function reply(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}
