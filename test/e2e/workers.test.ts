import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { RunningCa } from '../../src/ca/ca-server.ts';
import { startCa } from '../../src/ca/ca-server.ts';
import { mintToken } from '../../src/ca/token-mint.ts';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { policyServerConfigSchema } from '../../src/config/policy-server-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import { bearerMetadata, createCaClient } from '../../src/identity/ca-api.ts';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import { certificateFacts, createCsr, generateKeyPair, privateKeyToPem } from '../../src/identity/x509.ts';
import type { RunningPolicyServer } from '../../src/policy-server/policy-server.ts';
import { startPolicyServer } from '../../src/policy-server/policy-server.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { noTracing } from '../../src/telemetry/tracing.ts';
import { createCaMaterialDir } from '../helpers/ca-fixture.ts';
import { eventually } from '../helpers/eventually.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { SidecarProcess } from '../helpers/sidecar-process.ts';
import { startSidecarProcess } from '../helpers/sidecar-process.ts';

/*
 * A sidecar process with `workers: 2`, a real CA (real clock, 8 s leaves, so
 * a rotation every ~4 s) and a real policy server: both workers serve calls,
 * present the primary's certificate after each rotation, enforce each policy
 * the server pushes, a killed worker comes back, /metrics counts every call,
 * and SIGTERM drains both. Calls go straight to the inbound listener with
 * frontend's certificate, each on a new connection, so the kernel spreads
 * them over the workers; the access log line of each call names its worker.
 */

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
const ALLOW = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: allow-frontend, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - name: frontend
      from: [{ principals: ["${FRONTEND}"] }]
`;
const DENY_PRIVATE = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: no-private, namespace: shop }
spec:
  selector: { services: [orders] }
  action: DENY
  rules:
    - name: private
      to: [{ paths: ["/private*"] }]
`;
const AUTO_BAN = `apiVersion: meshgate.dev/v1
kind: IPAccessPolicy
metadata: { name: autoban, namespace: shop }
spec:
  selector: { services: [orders] }
  autoBan: { threshold: 2, window: 1m, duration: 10m, maxEntries: 100 }
`;
/** Enough calls on new connections that both workers get some (all on one: 2 in 2^15). */
const SPREAD = 16;

interface Reply {
  readonly status: number;
  readonly reason: string | undefined;
  readonly serial: string;
  readonly path: string;
}

interface WorkerView {
  worker: number;
  pid: number;
  state: string;
  restarts: number;
  certificate?: { serial: string };
  policy?: { version: string | null };
}

const silent = () => createLogger({ level: 'silent', name: 'test' });

describe('a sidecar with workers: 2', () => {
  let dir: string;
  let ca: RunningCa;
  let policyServer: RunningPolicyServer;
  let app: TestServer;
  let sidecar: SidecarProcess;
  let frontend: WorkloadCredentials;
  let calls = 0;
  let slowArrived: () => void = () => {};

  const token = async (ns: string, sa: string): Promise<string> =>
    mintToken({
      keyPem: await readFile(path.join(dir, 'token-signing.key'), 'utf8'),
      namespace: ns,
      serviceAccount: sa,
      ttlMs: 3_600_000,
      issuer: 'meshgate',
      audience: 'meshgate-ca',
      clock: systemClock,
    });

  beforeAll(async () => {
    dir = await createCaMaterialDir();
    const caInput = {
      ...(parseYaml(await readFile(path.join(dir, 'ca.yaml'), 'utf8')) as object),
      listen: { address: '127.0.0.1', port: 0 },
      admin: { address: '127.0.0.1', port: 0 },
      leaf: { ttl: '8s', maxTtl: '1h', keyTypes: ['ecdsa-p256'] },
      log: { level: 'silent' },
    };
    ca = await startCa(parseConfigText(JSON.stringify(caInput), 'ca.yaml', caConfigSchema), { logger: silent(), clock: systemClock, configDir: dir, configFile: 'ca.yaml', tracing: noTracing('ca') });
    const caAddress = `127.0.0.1:${ca.grpcPort}`;
    const caRef = { address: caAddress, trustBundleFile: path.join(dir, 'trust-bundle.pem'), serverName: 'localhost' };

    const folder = path.join(dir, 'policies');
    await writeFile(path.join(dir, 'policy-server.token'), await token('meshgate-system', 'policy-server'));
    const { mkdir } = await import('node:fs/promises');
    await mkdir(folder);
    await writeFile(path.join(folder, 'allow.yaml'), ALLOW);
    const psInput = {
      identity: { trustDomain: 'cluster.local', ca: caRef, tokenFile: path.join(dir, 'policy-server.token') },
      listen: { address: '127.0.0.1', port: 0 },
      admin: { address: '127.0.0.1', port: 0 },
      policies: { folder },
      push: { debounce: '20ms' },
      registry: { warmup: '0s' },
      adminApi: { audit: { file: path.join(dir, 'audit.jsonl') } },
      log: { level: 'silent' },
    };
    policyServer = await startPolicyServer(parseConfigText(JSON.stringify(psInput), 'ps.yaml', policyServerConfigSchema), {
      logger: silent(),
      clock: systemClock,
      random: Math.random,
      configDir: dir,
      tracing: noTracing('ps'),
    });

    // The test's caller: a frontend certificate that outlives the test.
    const keys = await generateKeyPair('ecdsa-p256');
    const client = createCaClient(caAddress, grpc.credentials.createSsl(await readFile(path.join(dir, 'trust-bundle.pem'))));
    const signed = await client.sign({ csrPem: await createCsr(keys, 'ecdsa-p256'), ttlSeconds: 3600 }, bearerMetadata(await token('shop', 'frontend')));
    client.close();
    frontend = { keyPem: await privateKeyToPem(keys.privateKey), chainPem: signed.certChainPem, trustBundlePem: signed.trustBundlePem, facts: certificateFacts(signed.certChainPem[0]!) };

    app = await startHttpServer((req, res) => {
      if (req.url === '/slow') slowArrived();
      setTimeout(() => res.end('ok'), req.url === '/slow' ? 400 : 0);
    });
    await writeFile(path.join(dir, 'orders.token'), await token('shop', 'orders'));
    sidecar = await startSidecarProcess(
      {
        workload: { service: 'orders', namespace: 'shop' },
        workers: 2,
        listeners: { outbound: { address: '127.0.0.1', port: 0 }, inbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
        inbound: { app: app.url },
        mtls: { mode: 'STRICT' },
        identity: { ca: caRef, tokenFile: path.join(dir, 'orders.token'), ttl: '8s', jitterFraction: 0 },
        policy: { servers: [`127.0.0.1:${policyServer.grpcPort}`], stateDir: path.join(dir, 'state'), reconnect: { base: '50ms', max: '200ms' } },
        log: { level: 'info', accessLog: true },
        drain: { timeout: '5s' },
      },
      dir,
    );
    // Listening comes before the first snapshot (as in one process); ready once both workers enforce it.
    await eventually(() => admin('/ready'), { until: (r) => r.status === 200, timeoutMs: 10_000, what: '/ready 200' });
  }, 60_000);

  afterAll(async () => {
    sidecar?.child.kill('SIGKILL');
    await policyServer?.close();
    await ca?.close();
    await app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** One call on a new connection, with frontend's certificate: status, reason and the serial the worker presented. */
  const call = (callPath: string): Promise<Reply> => {
    calls++;
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: sidecar.ports.inbound,
          path: callPath,
          key: frontend.keyPem,
          cert: frontend.chainPem.join('\n'),
          ca: [...frontend.trustBundlePem],
          servername: 'orders.shop', // an IP is no SNI name
          checkServerIdentity: () => undefined, // a SPIFFE URI SAN, no host name
          agent: false,
        },
        (res: http.IncomingMessage) => {
          const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-meshgate-reason'] as string | undefined, serial, path: callPath }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  };
  const spread = (prefix: string): Promise<Reply[]> => Promise.all(Array.from({ length: SPREAD }, (_, i) => call(`${prefix}/${i}`)));
  /** The worker that served each path, from its access log line. */
  const workersOf = (replies: readonly Reply[]): Promise<Set<number>> =>
    eventually(
      () => {
        const lines = replies.map((r) => sidecar.logs.find((l) => l.log === 'access' && l.path === r.path));
        return lines.every(Boolean) ? new Set(lines.map((l) => Number(l!.worker))) : undefined;
      },
      { what: 'an access log line for every call' },
    ) as Promise<Set<number>>;
  const admin = async (what: string): Promise<{ status: number; body: string }> => {
    const res = await request(`${sidecar.adminUrl}${what}`);
    return { status: res.statusCode, body: await res.body.text() };
  };
  const dump = async (): Promise<{ certificate: { serial: string }; policy: { version: string | null }; workers: WorkerView[] }> => JSON.parse((await admin('/config_dump')).body);
  const inboundCalls = async (): Promise<number> => sumOf(parsePrometheusText((await admin('/metrics')).body), 'meshgate_requests_total', { direction: 'inbound' });
  /** /metrics counts every call the test made (a call is counted as its response ends: the last one may lag the client by a moment). */
  const everyCallCounted = () => eventually(inboundCalls, { until: (n) => n === calls, what: `meshgate_requests_total{direction="inbound"} = ${calls}` });

  it('serves calls through both workers, /ready and /metrics covering both', async () => {
    const replies = await spread('/hello');
    expect(replies.map((r) => r.status)).toEqual(Array(SPREAD).fill(200));
    expect(await workersOf(replies)).toEqual(new Set([1, 2]));
    const ready = await admin('/ready');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body).checks).toMatchObject({ workers: 'ok', certificate: 'ok', policy: 'ok' });
    await everyCallCounted();
    const { workers } = await dump();
    expect(workers.map((w) => w.state)).toEqual(['ready', 'ready']);
    expect(new Set(workers.map((w) => w.pid)).size).toBe(2);
  });

  it('after a rotation both workers present the one new certificate of the primary', async () => {
    const before = (await dump()).certificate.serial;
    // Consistent: every worker reports the primary's serial, then every connection shows it (retried if a rotation lands in between).
    const replies = await eventually(
      async () => {
        const serial = (
          await eventually(dump, {
            until: (d) => d.certificate.serial !== before && d.workers.every((w) => w.certificate?.serial === d.certificate.serial),
            timeoutMs: 15_000,
            what: 'a rotation every worker installed',
          })
        ).certificate.serial;
        const seen = await spread('/rotated');
        return (await dump()).certificate.serial === serial ? { serial, seen } : undefined;
      },
      { timeoutMs: 30_000, what: 'a probe with no rotation in the middle' },
    );
    expect(replies!.seen.map((r) => r.serial.toLowerCase())).toEqual(Array(SPREAD).fill(replies!.serial.toLowerCase()));
    expect(await workersOf(replies!.seen)).toEqual(new Set([1, 2]));
  });

  it('a DENY pushed by the policy server is enforced by both workers', async () => {
    const before = (await dump()).policy.version;
    expect((await call('/private/before')).status).toBe(200);
    await writeFile(path.join(dir, 'policies', 'deny.yaml'), DENY_PRIVATE);
    await eventually(dump, { until: (d) => d.policy.version !== before && d.workers.every((w) => w.policy?.version === d.policy.version), timeoutMs: 10_000, what: 'the new version in every worker' });
    const denied = await spread('/private');
    expect(denied.map((r) => `${r.status} ${r.reason}`)).toEqual(Array(SPREAD).fill('403 authz.denied'));
    expect(await workersOf(denied)).toEqual(new Set([1, 2]));
    expect((await call('/public')).status).toBe(200);
  });

  it('a check of your own pushed by the policy server is compiled and enforced by both workers', async () => {
    const before = (await dump()).policy.version;
    const check = `export default (call) => call.path.startsWith('/checked/') ? { deny: { code: 'checked', reason: 'no' } } : { allow: true };`;
    await writeFile(
      path.join(dir, 'policies', 'filter.yaml'),
      `apiVersion: meshgate.dev/v1\nkind: Filter\nmetadata: { name: own-check, namespace: shop }\nspec:\n  source: ${JSON.stringify(check)}\n`,
    );
    await eventually(dump, { until: (d) => d.policy.version !== before && d.workers.every((w) => w.policy?.version === d.policy.version), timeoutMs: 15_000, what: 'the new version in every worker' });
    const denied = await spread('/checked');
    expect(denied.map((r) => `${r.status} ${r.reason}`)).toEqual(Array(SPREAD).fill('403 filter.denied'));
    expect(await workersOf(denied)).toEqual(new Set([1, 2]));
    expect((await call('/public')).status).toBe(200);
  });

  it('a killed worker is restarted, /ready returns to 200 and its calls stay counted', async () => {
    await everyCallCounted(); // the scrape the counters of a dying worker are kept from
    const victim = (await dump()).workers[1]!;
    process.kill(victim.pid, 'SIGKILL');
    const back = await eventually(dump, { until: (d) => d.workers[1]!.pid !== victim.pid && d.workers[1]!.state === 'ready', timeoutMs: 15_000, what: 'worker 2 restarted' });
    expect(back.workers[1]!.restarts).toBe(1);
    await eventually(() => admin('/ready'), { until: (r) => r.status === 200, timeoutMs: 5_000, what: '/ready 200' });
    const replies = await spread('/after-restart');
    expect(replies.map((r) => r.status)).toEqual(Array(SPREAD).fill(200));
    expect(await workersOf(replies)).toEqual(new Set([1, 2]));
    await everyCallCounted();
    const metrics = parsePrometheusText((await admin('/metrics')).body);
    expect(sumOf(metrics, 'meshgate_worker_restarts_total')).toBe(1);
    expect(sumOf(metrics, 'meshgate_workers_ready')).toBe(2);
  });

  it("bans are per worker: /bans lists every worker's, DELETE lifts the address on all", async () => {
    const before = (await dump()).policy.version;
    await writeFile(path.join(dir, 'policies', 'autoban.yaml'), AUTO_BAN);
    await eventually(dump, { until: (d) => d.policy.version !== before && d.workers.every((w) => w.policy?.version === d.policy.version), timeoutMs: 10_000, what: 'autoBan in every worker' });
    // Refused calls spread over both workers; each bans 127.0.0.1 after its second refusal (another round in the unlikely case one got fewer).
    const refused: Reply[] = [];
    const bans = await eventually(
      async () => {
        refused.push(...(await spread('/private/again')));
        return JSON.parse((await admin('/bans')).body) as Array<{ address: string; worker: number }>;
      },
      { until: (list) => list.length === 2, what: 'a ban in each worker' },
    );
    expect(new Set(refused.map((r) => r.reason))).toEqual(new Set(['authz.denied', 'ip.banned']));
    expect(bans.map((b) => `${b.address} ${b.worker}`).sort()).toEqual(['127.0.0.1 1', '127.0.0.1 2']);
    const res = await request(`${sidecar.adminUrl}/bans/127.0.0.1`, { method: 'DELETE' });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    expect(JSON.parse((await admin('/bans')).body)).toEqual([]);
    const after = await spread('/public/again');
    expect(after.map((r) => r.status)).toEqual(Array(SPREAD).fill(200));
  });

  it('SIGTERM drains both workers: the call in flight completes, then every process exits 0', async () => {
    const pids = (await dump()).workers.map((w) => w.pid);
    const arrived = new Promise<void>((resolve) => (slowArrived = resolve));
    const slow = call('/slow');
    await arrived;
    sidecar.child.kill('SIGTERM');
    expect((await slow).status).toBe(200);
    expect(await sidecar.exited).toBe(0);
    const alive = pids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    expect(alive).toEqual([]);
    expect(sidecar.logs.filter((l) => l.msg === 'worker drained').map((l) => [l.worker, l.completed])).toEqual(
      expect.arrayContaining([
        [1, true],
        [2, true],
      ]),
    );
  });
});

describe('a sidecar with workers: 2 whose worker cannot start', () => {
  it('fails its start as one process would: exit code 2, one line naming the file and field', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-workers-'));
    try {
      const started = startSidecarProcess(
        {
          workload: { service: 'orders', namespace: 'shop' },
          workers: 2,
          listeners: {
            outbound: { address: '127.0.0.1', port: 0 },
            inbound: { address: '127.0.0.1', port: 0 },
            admin: { address: '127.0.0.1', port: 0 },
            edge: { address: '127.0.0.1', port: 0, certFile: 'missing.pem', keyFile: 'missing.key' },
          },
          inbound: { app: 'http://127.0.0.1:1' },
          mtls: { mode: 'DISABLE' },
          log: { level: 'error' },
        },
        dir,
      );
      // One line on stderr (no newline in it), as a single process prints it.
      await expect(started).rejects.toThrow(/exited \(2\) before listening: [^\n]*sidecar-\d+\.yaml: listeners\.edge\.(certFile|keyFile): cannot read [^\n]*missing[^\n]*$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
