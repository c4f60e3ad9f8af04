import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { SidecarConfigInput } from '../../src/config/sidecar-schema.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import type { TestCert } from './mesh-pki.ts';
import { issueCert } from './mesh-pki.ts';
import type { TestServer } from './servers.ts';
import { echoHandler, startHttpServer } from './servers.ts';
import type { TestSidecar } from './sidecar.ts';
import { startTestSidecar } from './sidecar.ts';
import { writeSnapshot } from './static-policy.ts';

/*
 * One app and one sidecar in front of it, no mesh: what the listener and
 * data-path tests attack. The sidecar's inbound listener forwards to the app;
 * the test's config usually routes an outbound service to it as well.
 */

export interface AppAndSidecar {
  readonly app: TestServer;
  readonly sc: TestSidecar;
  /** With `edge`: the edge listener's certificate files (tls.crt, tls.key) and the certificate first served. */
  readonly edge: { readonly dir: string; readonly certFile: string; readonly keyFile: string; readonly cert: TestCert } | undefined;
  /** With `policy`: the sidecar's state folder, holding the snapshot it boots with. */
  readonly stateDir: string | undefined;
  close(): Promise<void>;
}

type SidecarOverrides = Partial<SidecarConfigInput>;

/**
 * `config` adds to the sidecar's config (an `inbound` section of its own replaces the default one, so
 * it names the app too); `edge` adds a TLS edge listener with a certificate of its own; `policy`
 * makes the sidecar workload orders.shop enforcing these documents from the snapshot on its disk (no
 * policy server answers), and admitting what no AuthorizationPolicy covers.
 */
export async function startAppAndSidecar(opts: { app?: http.RequestListener; config?: (app: TestServer) => SidecarOverrides; edge?: boolean; policy?: PolicyDocument[] } = {}): Promise<AppAndSidecar> {
  let stateDir: string | undefined;
  let policy: SidecarOverrides = {};
  if (opts.policy) {
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-state-'));
    await writeSnapshot(stateDir, { service: 'orders' }, opts.policy);
    policy = { workload: { service: 'orders', namespace: 'shop' }, policy: { servers: ['127.0.0.1:1'], stateDir }, authorization: { allowWhenNoPolicy: true } };
  }
  const app = await startHttpServer(opts.app ?? echoHandler('app'));
  let edge: AppAndSidecar['edge'];
  if (opts.edge) {
    const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-edge-'));
    const cert = await issueCert({ spiffeId: 'spiffe://edge.example/ns/x/sa/gateway' });
    edge = { dir, certFile: path.join(dir, 'tls.crt'), keyFile: path.join(dir, 'tls.key'), cert };
    await writeFile(edge.certFile, cert.certPem);
    await writeFile(edge.keyFile, cert.keyPem);
  }
  const listeners = edge && {
    outbound: { address: '127.0.0.1', port: 0 },
    inbound: { address: '127.0.0.1', port: 0 },
    admin: { address: '127.0.0.1', port: 0 },
    edge: { address: '127.0.0.1', port: 0, certFile: edge.certFile, keyFile: edge.keyFile },
  };
  const sc = await startTestSidecar({ inbound: { app: app.url }, ...policy, ...(listeners ? { listeners } : {}), ...opts.config?.(app) }).catch(async (err: unknown) => {
    await app.close();
    throw err;
  });
  return {
    app,
    sc,
    edge,
    stateDir,
    async close() {
      await sc.drain(100);
      await app.close();
      for (const dir of [edge?.dir, stateDir]) if (dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An outbound service `name` whose one endpoint is `app`. */
export const serviceTo = (app: TestServer, name = 'orders', extra: Record<string, unknown> = {}) => ({ name, endpoints: [{ address: app.address }], ...extra });

/** The sidecar's two plain listeners as `[direction, port]` rows, for cases that run on both (it.each). */
export const bothListeners = (sc: () => TestSidecar) =>
  [
    ['inbound', () => sc().inbound.port],
    ['outbound', () => sc().outbound.port],
  ] as const;
