import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { allowFrontendCalls } from '../helpers/mesh.ts';
import type { RunningMeshgate } from '../helpers/process.ts';
import { freePort, spawnMeshgate } from '../helpers/process.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { startTcpGate } from '../helpers/tcp-gate.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, eventually, meshSidecarConfig, TRUST_DOMAIN } from '../integration/policy-server-harness.ts';

/*
 * #11: a policy server down longer than its registry lease, restarted while
 * frontend calls orders at ~250 calls/s. The callers reconnect first and get a
 * registry the restarted server built before orders' sidecar rejoined. Callers
 * must keep their route to orders: not one 404.
 *
 * Real parts: the policy server is `meshgate policy-server` in its own process,
 * killed with SIGKILL (its shared-registry file stays behind and goes stale
 * after the 300 ms lease) and started again on the same port; the CA and both
 * sidecars are real, over mutual TLS. Orders reaches the policy server through
 * a TCP gate the test holds shut for a second after the restart, so "callers
 * first" happens every run instead of by the luck of the backoffs.
 */

const LEASE = '300ms';

/** A running policy server, in its own process or in this one. */
interface PolicyServerHandle {
  readonly serverId: string;
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** The child: SIGKILL (its shared-registry file stays behind). In-process: close. */
  stop(): Promise<void>;
}

/** ~250 calls/s from frontend's app to orders, at most 64 in flight; statuses and reason codes counted. */
function startLoad(frontend: TestSidecar) {
  const agent = new Agent({ connections: 32 });
  const counts = new Map<string, number>();
  let inFlight = 0;
  let ok = 0;
  let answered = 0;
  const started = performance.now();
  const timer = setInterval(() => {
    if (inFlight >= 64) return;
    inFlight++;
    request(`${frontend.outboundUrl}/orders/1`, { headers: { host: 'orders.shop' }, dispatcher: agent })
      .then(async (res) => {
        await res.body.dump();
        answered++;
        if (res.statusCode === 200) ok++;
        const key = `${res.statusCode} ${res.headers['x-meshgate-reason'] ?? ''}`.trim();
        counts.set(key, (counts.get(key) ?? 0) + 1);
      })
      .catch((err: Error) => counts.set(`error ${err.message}`, (counts.get(`error ${err.message}`) ?? 0) + 1))
      .finally(() => inFlight--);
  }, 4);
  let stoppedAt: number | undefined;
  return {
    ok: () => ok,
    answered: () => answered,
    rate: () => answered / (((stoppedAt ?? performance.now()) - started) / 1000),
    async stop(): Promise<Record<string, number>> {
      clearInterval(timer);
      stoppedAt = performance.now();
      await eventually(() => inFlight === 0, 5_000, 'calls in flight to finish');
      await agent.close();
      return Object.fromEntries(counts);
    },
  };
}

describe('policy server restarted after an outage longer than the registry lease, under load', () => {
  let h: PolicyHarness;
  let app: TestServer;
  let port: number;
  const children: RunningMeshgate[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/allow.yaml', allowFrontendCalls);
    app = await startHttpServer(echoHandler('orders'));
  });
  afterEach(async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => undefined);
  });
  afterAll(async () => {
    for (const c of children) await c.kill();
    await app?.close();
    await h?.close();
  });

  /** `meshgate policy-server` in a child process, on `port`. */
  async function spawnPolicyServer(warmup: string): Promise<PolicyServerHandle> {
    const file = path.join(h.dir, `policy-server-${port}.yaml`);
    await writeFile(
      file,
      stringify({
        identity: { trustDomain: TRUST_DOMAIN, ca: { address: h.ca.address, trustBundleFile: path.join(h.ca.dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile: 'policy-server.token' },
        listen: { address: '127.0.0.1', port },
        admin: { address: '127.0.0.1', port: 0 },
        policies: { folder: 'policies' },
        registry: { warmup, shared: { lease: LEASE } },
        push: { debounce: '20ms' },
        adminApi: { audit: { file: `audit-${port}.jsonl` } },
      }),
    );
    const server = await spawnMeshgate(['policy-server', '--config', file], { listening: 'meshgate policy-server listening' });
    children.push(server);
    return { serverId: server.listening.serverId as string, logs: server.logs, stop: () => server.kill() };
  }

  /** The harness's in-process policy server on `port`: starts in a fraction of the time a process takes. */
  async function inProcessPolicyServer(warmup: string): Promise<PolicyServerHandle> {
    const ps = await h.start({ listen: { address: '127.0.0.1', port }, registry: { warmup, shared: { lease: LEASE } } });
    return { serverId: ps.server.serverId, logs: ps.logs, stop: () => ps.close() };
  }

  /** The policy server frontend's snapshot came from, per its /config_dump. */
  async function snapshotServer(sc: TestSidecar): Promise<string | undefined> {
    const dump = (await (await request(`${sc.adminUrl}/config_dump`)).body.json()) as { policy: { status: { serverId?: string; connectedTo?: string } | null } };
    return dump.policy.status?.connectedTo ? dump.policy.status.serverId : undefined;
  }

  /**
   * The fault, start to end, returning the calls' outcomes: kill the policy
   * server, keep it down for 3 leases, restart it, let frontend resync while
   * orders is held back a second, then let orders rejoin.
   */
  async function restartUnderLoad(opts: { warmup: string; holdEndpoints: string; process: boolean }): Promise<Record<string, number>> {
    const startPolicyServer = opts.process ? spawnPolicyServer : inProcessPolicyServer;
    port = await freePort();
    const stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-restart-'));
    cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
    const gate = await startTcpGate(port);
    cleanups.push(() => gate.close());
    let ps = await startPolicyServer(opts.warmup);
    const sidecar = async (name: string, servers: string[], extra: Record<string, unknown>): Promise<TestSidecar> => {
      const base = await meshSidecarConfig(h, name, { servers, stateDir });
      const sc = await startTestSidecar({
        ...base,
        policy: { ...base.policy, holdEndpoints: opts.holdEndpoints },
        log: { level: 'warn', accessLog: false },
        ...extra,
      } as Parameters<typeof startTestSidecar>[0]);
      cleanups.push(() => sc.drain(200));
      return sc;
    };
    await sidecar('orders', [gate.address], { inbound: { app: app.url } });
    const frontend = await sidecar('frontend', [`127.0.0.1:${port}`], { inbound: { app: 'http://127.0.0.1:1' } });
    // Frontend knows orders only from the registry push.
    await expect
      .poll(async () => await request(`${frontend.outboundUrl}/orders/1`, { headers: { host: 'orders.shop' } }).then(async (r) => (await r.body.dump(), r.statusCode)), {
        timeout: 10_000,
        interval: 50,
      })
      .toBe(200);

    const load = startLoad(frontend);
    await eventually(() => load.ok() >= 100, 10_000, '100 calls answered before the fault');
    await ps.stop();
    gate.open = false;
    // The outage itself lasts three leases (the fault's length, not a wait for an event): the registry
    // file the killed server left behind is stale by then.
    await new Promise((resolve) => setTimeout(resolve, 900));
    ps = await startPolicyServer(opts.warmup);
    const restarted = ps.serverId;
    await expect.poll(() => snapshotServer(frontend), { timeout: 10_000, interval: 20 }).toBe(restarted);
    const beforeRejoin = load.answered();
    // Frontend has the restarted server's registry; orders has not rejoined. 150 calls in this state.
    await eventually(() => load.answered() - beforeRejoin >= 150, 10_000, '150 calls while orders is still away from the policy server');
    gate.open = true;
    await eventually(() => ps.logs.some((l) => l.msg === 'subscriber joined' && String(l.spiffeId).endsWith('/sa/orders')), 10_000, 'orders to rejoin');
    const afterRejoin = load.answered();
    await eventually(() => load.answered() - afterRejoin >= 50, 10_000, '50 calls after orders rejoined');
    const outcomes = await load.stop();
    await ps.stop();
    console.log(
      `registry restart (${opts.process ? 'policy-server process, SIGKILL' : 'in-process policy server'}, warmup ${opts.warmup}, holdEndpoints ${opts.holdEndpoints}): ${JSON.stringify(outcomes)} at ${load.rate().toFixed(0)} calls/s`,
    );
    return outcomes;
  }

  it('policy-server process killed, down 3 leases, restarted; defaults otherwise: every call 200, none 404', { timeout: 120_000 }, async () => {
    const outcomes = await restartUnderLoad({ warmup: '45s', holdEndpoints: '45s', process: true });
    expect(Object.keys(outcomes)).toEqual(['200']);
  });

  it('the server warm-up alone (sidecar hold off) never drops the service: no call 404 or without an endpoint', { timeout: 60_000 }, async () => {
    const outcomes = await restartUnderLoad({ warmup: '45s', holdEndpoints: '0s', process: false });
    // What the warm-up guarantees is the route. In about one run in three a handful of calls (3 of
    // ~580) got 503 upstream.unavailable here, a connect-level failure not yet explained, which the
    // default (warm-up and hold together, the first test) has never shown; tracked in the notes.
    expect(outcomes['404 route.not_found']).toBeUndefined();
    expect(outcomes['503 upstream.no_endpoint']).toBeUndefined();
    const total = Object.values(outcomes).reduce((a, b) => a + b, 0);
    expect(outcomes['200']! / total).toBeGreaterThan(0.98);
  });

  it('the sidecar hold alone (no server warm-up) keeps every call at 200', { timeout: 60_000 }, async () => {
    const outcomes = await restartUnderLoad({ warmup: '0s', holdEndpoints: '45s', process: false });
    expect(Object.keys(outcomes)).toEqual(['200']);
  });

  it('control: with both off, the same fault fails calls (503 upstream.no_endpoint; 404 route.not_found before #11)', { timeout: 60_000 }, async () => {
    const outcomes = await restartUnderLoad({ warmup: '0s', holdEndpoints: '0s', process: false });
    expect(outcomes['404 route.not_found']).toBeUndefined();
    expect(outcomes['503 upstream.no_endpoint']).toBeGreaterThan(100);
  });
});
