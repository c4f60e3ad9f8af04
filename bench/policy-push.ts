/*
 * npm run bench:push — how fast a policy change reaches every subscribed
 * sidecar, and what a subscriber costs the policy server in memory.
 *
 * One run, one machine:
 *   - `meshgate ca` runs in this process (certs-init material in a temp folder);
 *   - `meshgate policy-server` runs as a child process (the real CLI), so its
 *     memory is its own; it gets its certificate from the CA like in production;
 *   - this process opens the subscriber streams: `--identities` client
 *     certificates (issuing one per stream would measure the CA), spread over
 *     `--channels` gRPC channels (one TLS connection each). The server keys
 *     subscribers by stream, so each stream is one simulated sidecar with its
 *     own Hello.sidecar_id and registered address; each declares one
 *     destination service, as a sidecar calling one upstream would.
 *
 * Rows:
 *   1 subscriber   the floor: file event + debounce + compile + one push + one ACK
 *   N subscribers  the same change fanned out to N streams
 * For each, `--changes` times: rewrite one mesh-wide document (applies to every
 * workload) with an atomic rename, and time from just before the rename to
 * the moment the last subscriber's ACK is handed to its stream. p50/p99 are
 * over the changes; "delivery p50/p99" is over every (change, subscriber) pair
 * from the rename to the snapshot's arrival. The client side (N streams
 * decoding in one process) is part of the measured path.
 *
 * Memory: the server's RSS and V8 heap used (its /metrics) before the N
 * streams and after they are all subscribed and quiet, divided by N.
 *
 * Bounded: each change must complete within `--timeout` seconds and the whole
 * run within `--deadline` seconds; on overrun it reports what it has and
 * exits 1. Everything (child, CA, temp folder) is cleaned up.
 *
 * Options: --subscribers N (1000), --changes R (10), --channels C (16),
 *          --identities K (8), --timeout S (30), --deadline S (300), --debounce D (50ms),
 *          --no-register (streams register no address: snapshots carry no endpoints,
 *          which separates the cost of the registry part from the rest),
 *          --replicas R (1; with 2 or more: a redis-server and R policy servers with
 *          `store: redis` reading the same folder, the channels spread over them
 *          round-robin, so each subscriber's destination registered on another
 *          replica; memory is replica 1's, pushes are summed over all)
 */

import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { request } from 'undici';
import { startCa } from '../src/ca/ca-server.ts';
import { writeCertsInit } from '../src/ca/certs-init.ts';
import { mintToken } from '../src/ca/token-mint.ts';
import { caConfigSchema } from '../src/config/ca-schema.ts';
import { systemClock } from '../src/core/clock.ts';
import { bearerMetadata, createCaClient } from '../src/identity/ca-api.ts';
import { createCsr, generateKeyPair, privateKeyToPem } from '../src/identity/x509.ts';
import type { ClientIdentity, PolicyClient, PolicyStream, WireSnapshot } from '../src/policy/policy-api.ts';
import { ackRequest, createPolicyClient, helloRequest, policyChannelCredentials, policyServerSpiffeId } from '../src/policy/policy-api.ts';
import { writeFileAtomic } from '../src/policy-server/atomic-file.ts';
import { noTracing } from '../src/telemetry/tracing.ts';
import { spawnPolicyServer, startPushRedis, stopChild } from './lib/push-replicas.ts';

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    changes: { type: 'string', default: '10' },
    channels: { type: 'string', default: '16' },
    identities: { type: 'string', default: '8' },
    timeout: { type: 'string', default: '30' },
    deadline: { type: 'string', default: '300' },
    debounce: { type: 'string', default: '50ms' },
    'no-register': { type: 'boolean', default: false },
    replicas: { type: 'string', default: '1' },
  },
  strict: true,
});
const N = Number(values.subscribers);
const CHANGES = Number(values.changes);
const CHANNELS = Number(values.channels);
const IDENTITIES = Number(values.identities);
const REPLICAS = Number(values.replicas);
const TIMEOUT_MS = Number(values.timeout) * 1000;
for (const [name, v] of Object.entries({ subscribers: N, changes: CHANGES, channels: CHANNELS, identities: IDENTITIES, timeout: TIMEOUT_MS, replicas: REPLICAS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer`);
}
const ROOT = path.resolve(import.meta.dirname, '..');
const TD = 'cluster.local';

const watchdog = setTimeout(() => {
  process.stderr.write(`bench:push: overran --deadline ${values.deadline}s; stopping\n`);
  void cleanup().finally(() => process.exit(1));
}, Number(values.deadline) * 1000);
watchdog.unref();

let child: ChildProcess | undefined;
const others: ChildProcess[] = [];
let redisChild: ChildProcess | undefined;
let dir: string | undefined;
let caClose: (() => Promise<void>) | undefined;
const clients: PolicyClient[] = [];
const streams: PolicyStream[] = [];

async function cleanup(): Promise<void> {
  inspector?.close();
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
  await Promise.all([child, ...others].map(stopChild));
  await stopChild(redisChild);
  await caClose?.();
  if (dir) await rm(dir, { recursive: true, force: true });
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

const meshWide = (revision: number): string =>
  [
    'apiVersion: meshgate.dev/v1',
    'kind: AuthorizationPolicy',
    'metadata:',
    '  name: mesh-baseline',
    '  namespace: meshgate-system',
    `  labels: { revision: "${revision}" }`,
    'spec:',
    '  action: DENY',
    '  rules:',
    '    - from:',
    '        - namespaces: [quarantine]',
    '',
  ].join('\n');

const perService = (i: number): string =>
  [
    'apiVersion: meshgate.dev/v1',
    'kind: AuthorizationPolicy',
    'metadata:',
    `  name: allow-svc-${i}`,
    '  namespace: bench',
    'spec:',
    `  selector: { services: [svc-${i}] }`,
    '  rules:',
    `    - from: [{ principals: ["spiffe://${TD}/ns/bench/sa/svc-${(i + IDENTITIES - 1) % IDENTITIES}"] }]`,
    '      to: [{ methods: [GET, POST], paths: ["/api/*"] }]',
    '',
  ].join('\n');

interface Subscriber {
  readonly stream: PolicyStream;
  version: string;
  received: number;
  /** Set by a change: when its snapshot arrived and when the ACK was flushed. */
  arrivedAt: number;
  ackedAt: number;
}

let inspector: WebSocket | undefined;
let inspectorCalls = 0;

function inspect(method: string, params: Record<string, unknown> = {}): Promise<{ result?: { value?: unknown } }> {
  const id = ++inspectorCalls;
  return new Promise((resolve) => {
    const onMessage = (event: MessageEvent): void => {
      const reply = JSON.parse(String(event.data)) as { id?: number; result?: { result?: { value?: unknown } } };
      if (reply.id !== id) return;
      inspector!.removeEventListener('message', onMessage);
      resolve(reply.result ?? {});
    };
    inspector!.addEventListener('message', onMessage);
    inspector!.send(JSON.stringify({ id, method, params }));
  });
}

/** The server's memory after a full GC: RSS from /proc, heap used from V8. */
async function serverMemory(pid: number): Promise<{ rss: number; heapUsed: number }> {
  await inspect('HeapProfiler.collectGarbage');
  const evaluated = (await inspect('Runtime.evaluate', { expression: 'process.memoryUsage().heapUsed', returnByValue: true })) as { result?: { value?: number } };
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return { rss: Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024, heapUsed: Number(evaluated.result?.value) };
}

async function metricOf(adminPort: number, name: string): Promise<number> {
  const text = await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : Number.NaN;
}

/** Summed over every replica's /metrics. */
let adminPorts: number[] = [];
async function metric(_adminPort: number, name: string): Promise<number> {
  const values_ = await Promise.all(adminPorts.map((p) => metricOf(p, name)));
  return values_.reduce((a, b) => a + b, 0);
}

try {
  dir = await mkdtemp(path.join(tmpdir(), 'meshgate-bench-push-'));
  process.stderr.write(
    `bench:push: ${N} subscribers over ${CHANNELS} channels / ${IDENTITIES} certificates, ${REPLICAS} replica(s)${REPLICAS > 1 ? ' (store: redis)' : ''}, ${CHANGES} changes, debounce ${values.debounce}, ${cpus().length} CPUs, Node ${process.version}\n`,
  );
  const redisUrl = REPLICAS > 1 ? await startPushRedis().then((r) => ((redisChild = r.child), r.url)) : undefined;
  await writeCertsInit({ outDir: dir, trustDomain: TD, keyType: 'ecdsa-p256', intermediate: false, rootTtlMs: 86_400_000 * 365, force: false, clock: systemClock });
  const caConfig = caConfigSchema.parse({
    trustDomain: TD,
    listen: { address: '127.0.0.1', port: 0 },
    admin: { address: '127.0.0.1', port: 0 },
    signing: { certFile: 'root-ca.pem', keyFile: 'root-ca.key' },
    trustBundle: { files: ['trust-bundle.pem'] },
    tokens: { issuers: ['meshgate'], publicKeyFile: 'token-signing.pub.pem', algorithms: ['ES256'] },
    rateLimit: { perIdentity: { requests: 1_000_000, window: '1m' } },
    log: { level: 'warn' },
  });
  const ca = await startCa(caConfig, { logger: pino({ level: 'warn' }), clock: systemClock, configDir: dir, configFile: 'bench', tracing: noTracing('meshgate-ca') });
  caClose = () => ca.close();
  const tokenKey = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
  const token = (ns: string, sa: string) => mintToken({ keyPem: tokenKey, namespace: ns, serviceAccount: sa, ttlMs: 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock });

  const folder = path.join(dir, 'policies');
  await writeFileAtomic(path.join(folder, 'meshgate-system', 'mesh-baseline.yaml'), meshWide(0));
  for (let i = 0; i < IDENTITIES; i++) await writeFileAtomic(path.join(folder, 'bench', `allow-svc-${i}.yaml`), perService(i));
  await writeFile(path.join(dir, 'policy-server.token'), await token('meshgate-system', 'policy-server'));
  await writeFile(
    path.join(dir, 'policy-server.yaml'),
    [
      'identity:',
      `  trustDomain: ${TD}`,
      `  ca: { address: "127.0.0.1:${ca.grpcPort}", trustBundleFile: trust-bundle.pem, serverName: localhost }`,
      '  tokenFile: policy-server.token',
      'listen: { address: 127.0.0.1, port: 0 }',
      'admin: { address: 127.0.0.1, port: 0 }',
      'policies: { folder: policies }',
      `push: { debounce: ${values.debounce}, maxSubscribers: ${N + 100} }`,
      'adminApi: { audit: { file: policy-audit.jsonl } }',
      ...(redisUrl ? ['store: redis', `redis: { url: "${redisUrl}" }`] : []),
      'log: { level: info }',
      '',
    ].join('\n'),
  );

  // The real CLI, with its own heap: its memory is the server's alone.
  // With the inspector on, so memory is read after a full GC (as test/fixtures/child-sidecar.ts does).
  const bin = path.join(ROOT, 'bin/meshgate.js');
  const configFile = path.join(dir, 'policy-server.yaml');
  const servers = await Promise.all(Array.from({ length: REPLICAS }, (_, r) => spawnPolicyServer(bin, configFile, { inspect: r === 0 })));
  child = servers[0]!.child;
  others.push(...servers.slice(1).map((s) => s.child));
  const ports = servers[0]!;
  adminPorts = servers.map((s) => s.adminPort);
  inspector = new WebSocket(await ports.inspectorUrl);
  await once(inspector, 'open');

  const identities: ClientIdentity[] = await Promise.all(
    Array.from({ length: IDENTITIES }, async (_, i) => {
      const keys = await generateKeyPair('ecdsa-p256');
      const caClient = createCaClient(`127.0.0.1:${ca.grpcPort}`, grpc.credentials.createSsl(Buffer.from(ca.trustBundlePem.join(''))), { 'grpc.ssl_target_name_override': 'localhost' });
      const signed = await caClient.sign({ csrPem: await createCsr(keys, 'ecdsa-p256') }, bearerMetadata(await token('bench', `svc-${i}`)));
      caClient.close();
      return { keyPem: await privateKeyToPem(keys.privateKey), chainPem: signed.certChainPem, trustBundlePem: signed.trustBundlePem };
    }),
  );
  const channels = Array.from({ length: CHANNELS }, (_, c) => {
    // Channel c on replica c mod R: with 8 identities and 2 replicas, each service's destination registered on the other replica.
    const client = createPolicyClient(`127.0.0.1:${servers[c % REPLICAS]!.grpcPort}`, policyChannelCredentials(identities[c % IDENTITIES]!, policyServerSpiffeId(TD)));
    clients.push(client);
    return client;
  });

  const subscribers: Subscriber[] = [];
  let onActivity: (() => void) | undefined;
  const open = (i: number): Subscriber => {
    const channel = i % CHANNELS;
    const service = channel % IDENTITIES;
    const stream = channels[channel]!.subscribe();
    streams.push(stream);
    const sub: Subscriber = { stream, version: '', received: 0, arrivedAt: 0, ackedAt: 0 };
    stream.on('data', (s: WireSnapshot) => {
      sub.arrivedAt = performance.now();
      sub.version = s.version;
      sub.received++;
      stream.write(ackRequest(s.version, true), () => {
        sub.ackedAt = performance.now();
        onActivity?.();
      });
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) process.stderr.write(`bench:push: stream ${i} ended: ${err.message}\n`);
    });
    stream.write(
      helloRequest({
        sidecarId: `bench-${i}`,
        address: values['no-register'] ? '' : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:15006`,
        labels: { app: `svc-${service}` },
        destinations: [`svc-${(service + 1) % IDENTITIES}.bench`],
      }),
    );
    subscribers.push(sub);
    return sub;
  };

  /** Resolves when `check` holds, re-checked on every ACK; rejects after `ms`. */
  const until = (check: () => boolean, ms: number, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      if (check()) return resolve();
      const timer = setTimeout(() => {
        onActivity = undefined;
        reject(new Error(`${what}: not within ${ms} ms`));
      }, ms);
      onActivity = () => {
        if (!check()) return;
        clearTimeout(timer);
        onActivity = undefined;
        resolve();
      };
    });

  /** No snapshot anywhere for `quietMs`: the registry churn of new subscribers has settled. */
  const quiet = async (quietMs: number): Promise<void> => {
    for (;;) {
      const before = subscribers.reduce((n, s) => n + s.received, 0);
      await new Promise((resolve) => setTimeout(resolve, quietMs));
      if (subscribers.reduce((n, s) => n + s.received, 0) === before) return;
    }
  };

  let revision = 0;
  const measure = async (label: string, subs: readonly Subscriber[]) => {
    const lastAck: number[] = [];
    const delivery: number[] = [];
    const pushesBefore = await metric(ports.adminPort, 'meshgate_policy_pushes_total');
    const recomputeBefore = await metric(ports.adminPort, 'meshgate_policy_recompute_duration_seconds_sum');
    const recomputesBefore = await metric(ports.adminPort, 'meshgate_policy_recompute_duration_seconds_count');
    for (let r = 0; r < CHANGES; r++) {
      const before = subs.map((s) => s.version);
      for (const s of subs) s.ackedAt = s.arrivedAt = 0;
      revision++;
      const t0 = performance.now();
      await writeFileAtomic(path.join(folder, 'meshgate-system', 'mesh-baseline.yaml'), meshWide(revision));
      const done = () => subs.every((s, i) => s.version !== before[i] && s.ackedAt > 0);
      await until(done, TIMEOUT_MS, `${label}, change ${r + 1}`);
      lastAck.push(Math.max(...subs.map((s) => s.ackedAt)) - t0);
      for (const s of subs) delivery.push(s.arrivedAt - t0);
      await quiet(100);
    }
    const pushes = (await metric(ports.adminPort, 'meshgate_policy_pushes_total')) - pushesBefore;
    const recomputeMs =
      (((await metric(ports.adminPort, 'meshgate_policy_recompute_duration_seconds_sum')) - recomputeBefore) * 1000) /
      ((await metric(ports.adminPort, 'meshgate_policy_recompute_duration_seconds_count')) - recomputesBefore);
    lastAck.sort((a, b) => a - b);
    delivery.sort((a, b) => a - b);
    return {
      label,
      subscribers: subs.length,
      changes: CHANGES,
      lastAckP50: percentile(lastAck, 50),
      lastAckP99: percentile(lastAck, 99),
      lastAckMax: lastAck.at(-1)!,
      deliveryP50: percentile(delivery, 50),
      deliveryP99: percentile(delivery, 99),
      pushesPerChange: pushes / CHANGES,
      recomputeMs,
    };
  };

  // Baseline: one subscriber.
  const first = open(0);
  await until(() => first.ackedAt > 0, TIMEOUT_MS, 'first subscriber');
  await quiet(200);
  const baselineRow = await measure('1 subscriber', [first]);

  const memBefore = await serverMemory(child.pid!);
  const t0 = performance.now();
  for (let i = 1; i < N; i++) open(i);
  await until(() => subscribers.every((s) => s.ackedAt > 0), TIMEOUT_MS * 2, `${N} subscribers connected`);
  const connectMs = performance.now() - t0;
  await quiet(500);
  const settledMs = performance.now() - t0;
  const memAfter = await serverMemory(child.pid!);
  const open_ = await metric(ports.adminPort, 'meshgate_policy_subscribers');
  const fanoutRow = await measure(`${N} subscribers`, subscribers);

  const rows = [baselineRow, { ...fanoutRow, label: REPLICAS > 1 ? `${fanoutRow.label} over ${REPLICAS} replicas` : fanoutRow.label }];
  const header = ['row', 'changes', 'last ACK p50 ms', 'last ACK p99 ms', 'last ACK max ms', 'delivery p50 ms', 'delivery p99 ms', 'pushes/change', 'server recompute ms'];
  const lines = rows.map((r) => [
    r.label,
    String(r.changes),
    r.lastAckP50.toFixed(1),
    r.lastAckP99.toFixed(1),
    r.lastAckMax.toFixed(1),
    r.deliveryP50.toFixed(1),
    r.deliveryP99.toFixed(1),
    r.pushesPerChange.toFixed(0),
    r.recomputeMs.toFixed(1),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...lines.map((l) => l[c]!.length)));
  const fmt = (cells: string[]): string => `| ${cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(' | ')} |`;
  process.stdout.write(`${[fmt(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...lines.map(fmt)].join('\n')}\n\n`);
  const mib = (b: number): string => (b / 1024 / 1024).toFixed(1);
  // Streams replica 1 took on after the first subscriber (channel c is on replica c mod R).
  const onFirst = subscribers.filter((_, i) => i > 0 && (i % CHANNELS) % REPLICAS === 0).length;
  process.stdout.write(
    [
      `subscribers open on the server: ${open_}; all ${N} subscribed and ACKed in ${connectMs.toFixed(0)} ms (quiet after ${settledMs.toFixed(0)} ms)`,
      REPLICAS > 1 ? `replica 1's memory after a full GC (it holds ${Math.ceil(N / REPLICAS)} of the streams), 1 subscriber -> ${N}:` : `server memory after a full GC, 1 subscriber -> ${N}:`,
      `  RSS       ${mib(memBefore.rss)} -> ${mib(memAfter.rss)} MiB: ${((memAfter.rss - memBefore.rss) / onFirst / 1024).toFixed(1)} KiB per subscriber`,
      `  heap used ${mib(memBefore.heapUsed)} -> ${mib(memAfter.heapUsed)} MiB: ${((memAfter.heapUsed - memBefore.heapUsed) / onFirst / 1024).toFixed(1)} KiB per subscriber`,
      '',
    ].join('\n'),
  );
} catch (err) {
  process.stderr.write(`bench:push: ${(err as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await cleanup();
  clearTimeout(watchdog);
}
