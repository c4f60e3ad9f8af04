import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions, TlsOptions } from 'node:tls';
import type { Registry } from 'prom-client';
import { listenOn } from '../core/listen.ts';
import { isLoopbackAddress } from '../core/loopback.ts';
import { nodeHttp as http } from '../core/node-builtins.ts';
import type { AdminRoute } from './admin-reply.ts';
import { sendAdminError, sendText } from './admin-reply.ts';
import type { BanAdmin } from './ban-routes.ts';
import { banRoutes } from './ban-routes.ts';

interface ReadinessReport {
  readonly ready: boolean;
  /** Each check by name: `ok`, or what is missing. */
  readonly checks: Readonly<Record<string, string>>;
}

/** Extra admin paths, tried after the built-in ones: answers the requests it knows, returns false for the rest. */
type AdminRoutes = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface AdminDeps {
  /** `skipApp`: `/ready?skip=app`, readiness without the local app (a native sidecar's startup probe: the app starts after it). */
  readiness(opts?: { readonly skipApp: boolean }): ReadinessReport | Promise<ReadinessReport>;
  /** Effective configuration and state; must never contain a key or a token. */
  configDump(): unknown;
  /** What /metrics serves: a role's registry, or a sidecar primary's sum over its workers. */
  readonly registry: Pick<Registry, 'metrics' | 'contentType'>;
  /** The sidecar's auto-ban list: `GET /bans`, `DELETE /bans/{address}`. Absent: those paths are 404. */
  readonly bans?: BanAdmin;
  /** A role's own paths (the policy server's admin API under /api/v1/). */
  readonly routes?: AdminRoutes;
  /** TLS options; plain HTTP when absent. */
  readonly tls?: TlsOptions;
  /** node:http limits; the defaults suit GET-only listeners. */
  readonly limits?: { readonly maxHeaderSize: number; readonly requestTimeout: number; readonly headersTimeout: number };
}

export interface AdminServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Swaps a rotated certificate into a TLS listener; open connections keep theirs. */
  updateTls(context: SecureContextOptions): void;
  close(): Promise<void>;
}

const READ = ['GET', 'HEAD'] as const;
const DEFAULT_LIMITS = { maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000 };

/**
 * The admin listener every role has: /live, /ready, /metrics, /config_dump,
 * /bans on a sidecar, and a role's own routes on the same port. An unknown
 * path is 404 and a known path with another method 405 with `Allow`, both
 * `{code, reason}` as JSON, whichever role answers.
 */
export function createAdminServer(deps: AdminDeps): AdminServer {
  const builtIn = new Map<string, AdminRoute>([
    ['/live', { methods: READ, handle: (_req, res) => sendText(res, 200, 'text/plain', 'live\n') }],
    ['/ready', { methods: READ, handle: (req, res) => ready(deps, req, res) }],
    [
      '/metrics',
      {
        methods: READ,
        handle: (_req, res) =>
          void deps.registry.metrics().then(
            (text) => sendText(res, 200, deps.registry.contentType, text),
            () => sendText(res, 500, 'text/plain', 'metrics unavailable\n'),
          ),
      },
    ],
    [
      '/config_dump',
      {
        methods: READ,
        localOnly: true,
        // A sidecar primary asks its workers (a promise); a failure is a 500, not a dropped connection.
        handle: (_req, res) =>
          void Promise.resolve()
            .then(() => deps.configDump())
            .then(
              (dump) => sendText(res, 200, 'application/json', JSON.stringify(dump, null, 2)),
              () => sendText(res, 500, 'text/plain', 'config dump unavailable\n'),
            ),
      },
    ],
  ]);
  const bans = deps.bans ? banRoutes(deps.bans) : undefined;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const route = builtIn.get(path) ?? bans?.(path);
    if (route?.localOnly && !isLoopbackAddress(req.socket.remoteAddress)) {
      return sendAdminError(res, 'admin.local_only', `${path} answers only callers on this host or pod (loopback); use kubectl port-forward or exec`);
    }
    if (route) {
      const method = req.method ?? 'GET';
      if (!route.methods.includes(method)) {
        return sendAdminError(res, 'admin.method_not_allowed', `${method} not allowed on ${path}`, {}, { allow: route.methods.join(', ') });
      }
      return route.handle(req, res, path);
    }
    if (deps.routes?.(req, res)) return;
    sendAdminError(res, 'admin.not_found', `no admin path ${path}`);
  };
  const limits = deps.limits ?? DEFAULT_LIMITS;
  // node:https (and with it TLS) only when the admin listener serves TLS: a plaintext sidecar never loads it.
  const httpsServer = deps.tls ? process.getBuiltinModule('node:https').createServer({ ...deps.tls, ...limits }, handler) : undefined;
  const server = httpsServer ?? http.createServer(limits, handler);
  return {
    listen: (port, host) => listenOn(server, port, host),
    updateTls(context) {
      httpsServer?.setSecureContext(context);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function ready(deps: AdminDeps, req: IncomingMessage, res: ServerResponse): void {
  const skipApp = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('skip') === 'app';
  // A readiness check that throws is an unready role, not a dropped connection.
  Promise.resolve()
    .then(() => deps.readiness({ skipApp }))
    .then(
      (report) => sendText(res, report.ready ? 200 : 503, 'application/json', JSON.stringify(report)),
      (err: unknown) => sendText(res, 503, 'application/json', JSON.stringify({ ready: false, checks: { readiness: String(err) } })),
    );
}
