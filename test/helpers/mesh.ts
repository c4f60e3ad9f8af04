import { mkdtemp, rm } from 'node:fs/promises';
import type http from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import type { PolicyServerConfigInput } from '../../src/config/policy-server-schema.ts';
import type { Clock } from '../../src/core/clock.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig, TRUST_DOMAIN } from '../integration/policy-server-harness.ts';
import { eventually } from './eventually.ts';
import { policyYaml } from './policy-yaml.ts';
import type { TestServer } from './servers.ts';
import { echoHandler, startHttpServer } from './servers.ts';
import type { TestSidecar } from './sidecar.ts';
import { startTestSidecar } from './sidecar.ts';

/*
 * The mesh the end-to-end tests share: a CA and a policy server (the policy
 * harness) serving the test's policy files, orders' app behind an `orders`
 * sidecar, and a `frontend` sidecar whose app calls orders.shop through its
 * outbound listener; mutual TLS STRICT, policy and registry streamed, every
 * sidecar in namespace shop. What a test changes (its policies, orders' app,
 * a config section of one sidecar) is an option; close() takes it all down.
 */

export const FRONTEND = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/frontend`;

/** frontend may GET from orders (rule shop/frontend-reads#reads), on `paths` when given. */
export const allowFrontendReads = (paths?: string[]): string =>
  policyYaml('AuthorizationPolicy', 'frontend-reads', {
    selector: { services: ['orders'] },
    action: 'ALLOW',
    rules: [{ name: 'reads', from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET'], ...(paths ? { paths } : {}) }] }],
  });

/** Nobody reaches `paths` of orders (rule shop/no-secrets#secret). */
export const denyPaths = (paths: string[] = ['/secret/*']): string =>
  policyYaml('AuthorizationPolicy', 'no-secrets', { selector: { services: ['orders'] }, action: 'DENY', rules: [{ name: 'secret', to: [{ paths }] }] });

/** frontend may call orders, any method and path. */
export const allowFrontendCalls = policyYaml('AuthorizationPolicy', 'frontend-calls-orders', { selector: { services: ['orders'] }, action: 'ALLOW', rules: [{ from: [{ principals: [FRONTEND] }] }] });

/**
 * orders accepts ES256 tokens of `issuer`, keys from `jwksUri`, audience orders (rule shop/orders-users#idp),
 * and passes their claims on in x-jwt-claims; `spec` and `rule` add to the document and to its rule.
 */
export const ordersUsers = (issuer: string, jwksUri: string, extra: { spec?: Record<string, unknown>; rule?: Record<string, unknown> } = {}): string =>
  policyYaml('RequestAuthentication', 'orders-users', {
    selector: { services: ['orders'] },
    ...extra.spec,
    jwtRules: [{ name: 'idp', issuer, jwksUri, audiences: ['orders'], algorithms: ['ES256'], ...extra.rule, forwardClaimsHeader: 'x-jwt-claims' }],
  });

/** orders' app for tests that count what got through: 200 "ok", and each call counted by its first path segment. */
export function segmentCountingApp(): { reached: Map<string, number>; app: http.RequestListener } {
  const reached = new Map<string, number>();
  const app: http.RequestListener = (req, res) => {
    const segment = (req.url ?? '/').split('/')[1] ?? '';
    reached.set(segment, (reached.get(segment) ?? 0) + 1);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  };
  return { reached, app };
}

type Sections = Record<string, unknown>;
type MeshSidecarBase = Awaited<ReturnType<typeof meshSidecarConfig>>;
/** Config sections over a mesh sidecar's, or a function of its base config (to extend a section of it) and of the orders sidecar once it runs. */
type SidecarExtra = Sections | ((base: MeshSidecarBase, orders: TestSidecar | undefined) => Sections);

export interface MeshOptions {
  /** Runs once the CA and the policy folder exist, before anything is signed or started. */
  readonly prepare?: (h: PolicyHarness) => void | Promise<void>;
  /** Policy files written before the server starts: path under the policy folder -> YAML. */
  readonly policies?: Readonly<Record<string, string>>;
  /** Overrides of the policy server's config. */
  readonly server?: Partial<PolicyServerConfigInput>;
  /** orders' app; default: it echoes each call as JSON (servers.ts echoHandler). */
  readonly app?: http.RequestListener;
  /** Sections every sidecar of the mesh gets, over the defaults (no app of its own, warn log, no access log). */
  readonly sidecars?: Sections;
  readonly orders?: SidecarExtra;
  readonly frontend?: SidecarExtra;
  /** Each sidecar's state folder under the mesh's (`<stateDir>/<name>`) instead of one shared folder. */
  readonly stateDirPerSidecar?: boolean;
  /**
   * Before startMesh returns: until frontend's call answers 200 (the registry push and the policy
   * reach both sidecars asynchronously). Default GET /orders/1 to orders.shop; false: no wait.
   */
  readonly ready?: { readonly path?: string; readonly host?: string; readonly headers?: Record<string, string>; readonly timeoutMs?: number } | false;
}

interface MeshCall {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

export interface Mesh {
  readonly h: PolicyHarness;
  /** The policy server the mesh started with. */
  readonly ps: TestPolicyServer;
  /** orders' app. */
  readonly app: TestServer;
  readonly stateDir: string;
  readonly orders: TestSidecar;
  readonly frontend: TestSidecar;
  /**
   * One more sidecar of the mesh for workload `name` (policy from the mesh's server unless `servers`);
   * close() drains it, and draining one twice is harmless.
   */
  sidecar(name: string, extra?: SidecarExtra, opts?: { servers?: string[]; stateDir?: string; clock?: Clock }): Promise<TestSidecar>;
  /** A call from frontend's app to orders.shop (or `host`). */
  call(p: string, init?: { method?: string; host?: string; headers?: Record<string, string>; body?: string }): Promise<MeshCall>;
  /** The status of a GET from frontend's app to orders.shop, body dropped. */
  status(p: string): Promise<number>;
  /** A mesh caller with frontend's identity and no policy of its own, with a static route to one inbound port (what frontend's registry may not have yet). */
  directCaller(port: number, service?: string): Promise<{ call(p: string): Promise<{ status: number; code: unknown }>; close(): Promise<unknown> }>;
  close(): Promise<void>;
}

export async function startMesh(opts: MeshOptions = {}): Promise<Mesh> {
  const h = await createPolicyHarness();
  const started: TestSidecar[] = [];
  let stateDir: string | undefined;
  let app: TestServer | undefined;
  const close = async (): Promise<void> => {
    for (const sc of started.reverse()) await sc.drain(200);
    // A test may have closed the policy server or the CA already (the fault it is about).
    await h.close().catch(() => undefined);
    await app?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  };
  let orders: TestSidecar | undefined;
  try {
    await opts.prepare?.(h);
    for (const [file, text] of Object.entries(opts.policies ?? {})) await h.write(file, text);
    const ps = await h.start(opts.server);
    app = await startHttpServer(opts.app ?? echoHandler('orders'));
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-mesh-'));
    const dir = stateDir;

    const sidecar: Mesh['sidecar'] = async (name, extra = {}, sidecarOpts = {}) => {
      const base = await meshSidecarConfig(h, name, { servers: sidecarOpts.servers ?? [ps.address], stateDir: sidecarOpts.stateDir ?? (opts.stateDirPerSidecar ? path.join(dir, name) : dir) });
      const sections = typeof extra === 'function' ? extra(base, orders) : extra;
      const sc = await startTestSidecar(
        { ...base, inbound: { app: 'http://127.0.0.1:1' }, log: { level: 'warn', accessLog: false }, ...opts.sidecars, ...sections } as Parameters<typeof startTestSidecar>[0],
        sidecarOpts.clock ? { clock: sidecarOpts.clock } : {},
      );
      let drained: ReturnType<TestSidecar['drain']> | undefined;
      const tracked: TestSidecar = { ...sc, drain: (timeoutMs) => (drained ??= sc.drain(timeoutMs)) };
      started.push(tracked);
      return tracked;
    };
    const ordersExtra = opts.orders ?? {};
    orders = await sidecar('orders', (base) => ({ inbound: { app: app!.url }, ...(typeof ordersExtra === 'function' ? ordersExtra(base, undefined) : ordersExtra) }));
    // No static services: frontend finds orders through the registry the server pushes.
    const frontend = await sidecar('frontend', opts.frontend);

    const call: Mesh['call'] = async (p, init = {}) => {
      const res = await request(`${frontend.outboundUrl}${p}`, {
        method: (init.method ?? 'GET') as 'GET',
        headers: { host: init.host ?? 'orders.shop', ...init.headers },
        ...(init.body !== undefined ? { body: init.body } : {}),
      });
      return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
    };
    const mesh: Mesh = {
      h,
      ps,
      app,
      stateDir,
      orders,
      frontend,
      sidecar,
      call,
      status: async (p) => (await call(p)).status,
      async directCaller(port, service = 'orders') {
        const { policy: _none, ...base } = await meshSidecarConfig(h, 'frontend', { servers: [], stateDir: dir });
        const sc = await startTestSidecar({
          ...base,
          inbound: { app: 'http://127.0.0.1:1' },
          log: { level: 'warn', accessLog: false },
          services: [{ name: service, namespace: 'shop', endpoints: [{ address: `127.0.0.1:${port}` }] }],
        });
        return {
          async call(p) {
            const res = await request(`${sc.outboundUrl}${p}`, { headers: { host: `${service}.shop` } });
            const text = await res.body.text();
            return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string }).code };
          },
          close: () => sc.drain(200),
        };
      },
      close,
    };
    if (opts.ready !== false) {
      const { path: p = '/orders/1', host, headers, timeoutMs = 10_000 } = opts.ready ?? {};
      await eventually(() => call(p, { host, headers }), { until: (res) => res.status === 200, timeoutMs, what: `GET ${p} from frontend to answer 200` });
    }
    return mesh;
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}
