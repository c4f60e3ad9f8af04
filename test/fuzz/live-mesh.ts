import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { request } from 'undici';
import { afterAll, beforeAll, expect } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { normalizePath } from '../../src/core/path-normalize.ts';
import { readRequestTarget } from '../../src/proxy/call.ts';
import { createHttpListener } from '../../src/proxy/listener.ts';
import { createReadBuffer } from '../../src/proxy/socket-reads.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';
import type { ChildMeshgate } from './child-process.ts';
import { spawnMeshgate, stopChild } from './child-process.ts';
import { fuzzTarget } from './fuzz-harness.ts';

/*
 * A live sidecar for fuzzing its listeners, and what it is judged against.
 *
 * The sidecar runs as a child process (`meshgate sidecar`), so a hang or a
 * crash cannot stall the test runner: its inbound listener forwards to one
 * counting app (with a DENY policy on /admin*), its outbound listener routes
 * Host `backend` to another. Each fuzz input (bytes on one connection) is
 * also sent to a reference: the same listener code (createHttpListener, same
 * limits) in this process, answering every request itself. What the apps see
 * must be a sub-multiset of what the reference parsed from the same bytes: a
 * request an app sees that the reference did not parse is one the sidecar
 * made up (request smuggling, a body turned into a request, a path changed on
 * the way). The apps also check that every request is well formed.
 */

/** Requests a party saw, as `METHOD path?query`. */
type Seen = string[];

interface CountingApp {
  readonly url: string;
  readonly seen: Seen;
  /** Why a request the app got was not well formed (or a parse error the app's own strict parser hit). */
  readonly problems: string[];
  /** performance.now() of the last request. */
  lastRequestAt: number;
  close(): Promise<void>;
}

async function startCountingApp(name: string, forbidden: RegExp | undefined): Promise<CountingApp> {
  const app: { seen: Seen; problems: string[]; lastRequestAt: number } = { seen: [], problems: [], lastRequestAt: 0 };
  const server = http.createServer({ insecureHTTPParser: false, requireHostHeader: true }, (req, res) => {
    app.lastRequestAt = performance.now();
    const url = req.url ?? '';
    app.seen.push(`${req.method} ${url}`);
    const path = url.split('?')[0]!;
    const normalized = normalizePath(path);
    if (!/^[A-Z][A-Z0-9-]*$/.test(req.method ?? '')) app.problems.push(`${name}: method ${JSON.stringify(req.method)}`);
    if (path !== '*' && !(normalized.ok && normalized.path === path)) app.problems.push(`${name}: a path that is not normalized: ${JSON.stringify(url)}`);
    if (forbidden?.test(path)) app.problems.push(`${name}: a path the policy denies: ${JSON.stringify(url)}`);
    if (!req.headers.host) app.problems.push(`${name}: no Host header on ${JSON.stringify(url)}`);
    req.resume();
    req.on('end', () => res.end('ok'));
    req.on('error', () => res.destroy());
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // A reset, or the connection ending inside a body, is the sidecar giving up on a call
    // whose caller left: not a malformed request.
    if (!err.code?.startsWith('HPE_') || err.code === 'HPE_INVALID_EOF_STATE') {
      socket.destroy();
      return;
    }
    app.problems.push(`${name}: the sidecar sent bytes a strict HTTP/1.1 parser refuses (${err.code})`);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(app, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

interface LiveMesh {
  readonly sidecar: ChildMeshgate;
  readonly inboundApp: CountingApp;
  readonly outboundApp: CountingApp;
  /** What the reference listener parsed, as the sidecar would forward it. */
  readonly referenceSeen: Seen;
  readonly referencePort: number;
  /** stderr of the sidecar so far (a crash leaves its stack here). */
  stderr(): string;
  close(): Promise<void>;
}

/** The host name the outbound listener routes to the outbound app. */
export const OUTBOUND_HOST = 'backend';

async function startLiveMesh(): Promise<LiveMesh> {
  const dir = await mkdtemp(join(tmpdir(), 'meshgate-fuzz-'));
  const inboundApp = await startCountingApp('inbound app', /^\/admin/);
  const outboundApp = await startCountingApp('outbound app', undefined);
  const workload = { service: 'orders', namespace: 'shop' };
  await writeSnapshot(dir, workload, [policyDoc('AuthorizationPolicy', 'no-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] })]);
  const config = {
    workload,
    listeners: { outbound: { address: '127.0.0.1', port: 0 }, inbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    inbound: { app: inboundApp.url, appProtocol: 'http1', timeout: '2s' },
    services: [{ name: OUTBOUND_HOST, namespace: 'shop', protocol: 'http1', tls: 'none', endpoints: [{ address: outboundApp.url.slice('http://'.length) }], routes: [{ timeout: '2s' }] }],
    authorization: { allowWhenNoPolicy: true },
    policy: { servers: ['127.0.0.1:1'], stateDir: dir },
    // Short enough that a connection the fuzzer leaves half-sent ends while the run goes on.
    limits: { headersTimeout: '2s', requestTimeout: '5s', idleTimeout: '5s' },
    log: { level: 'info', accessLog: false },
    mtls: { mode: 'DISABLE' },
  };
  const sidecar = await spawnMeshgate('sidecar', join(dir, 'sidecar.yaml'), config).catch(async (err: unknown) => {
    await Promise.all([inboundApp.close(), outboundApp.close(), rm(dir, { recursive: true, force: true })]);
    throw err;
  });

  // The reference: the listener code with the sidecar's own limits, answering every request itself.
  const { limits } = parseConfigText(JSON.stringify(config), 'fuzz.yaml', sidecarConfigSchema);
  const referenceSeen: Seen = [];
  const reference = createHttpListener(
    'reference',
    limits,
    (req, res) => {
      const target = readRequestTarget(req);
      if (!('code' in target)) referenceSeen.push(`${target.method} ${target.query === '' ? target.path : `${target.path}?${target.query}`}`);
      req.resume();
      res.end('ok');
    },
    { readBuffer: createReadBuffer() },
  );
  const { port: referencePort } = await reference.listen(0, '127.0.0.1');

  return {
    sidecar,
    inboundApp,
    outboundApp,
    referenceSeen,
    referencePort,
    stderr: () => sidecar.stderr(),
    async close() {
      await stopChild(sidecar);
      await reference.stopAccepting().catch(() => {});
      reference.destroy();
      await inboundApp.close();
      await outboundApp.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Writes `chunks` on one connection (a turn of the event loop between them, so
 * the parser sees the split points), then reads until the peer closes or goes
 * quiet for `idleMs`. Never throws: resets and refusals are outcomes too.
 */
async function exchange(port: number, chunks: readonly Buffer[], idleMs = 250, capMs = 4000): Promise<Buffer> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await Promise.race([new Promise<void>((resolve) => socket.once('connect', () => resolve())), closed]);
  for (const chunk of chunks) {
    if (socket.destroyed) break;
    socket.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const started = performance.now();
  while (!socket.destroyed && performance.now() - started < capMs) {
    const before = received.length;
    const closedNow = await Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), idleMs))]);
    if (closedNow || received.length === before) break;
  }
  socket.destroy();
  return Buffer.concat(received);
}

/** Waits until an app has had no new request for `quietMs` (late forwards land before the batch is judged). */
async function settle(apps: readonly CountingApp[], quietMs = 300, capMs = 5000): Promise<void> {
  const started = performance.now();
  while (performance.now() - started < capMs) {
    const last = Math.max(...apps.map((a) => a.lastRequestAt));
    const wait = last + quietMs - performance.now();
    if (wait <= 0) return;
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/** Entries of `a` not covered by `b`, counting repeats (multiset difference). */
function notIn(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const x of b) left.set(x, (left.get(x) ?? 0) + 1);
  const extra: string[] = [];
  for (const x of a) {
    const n = left.get(x) ?? 0;
    if (n === 0) extra.push(x);
    else left.set(x, n - 1);
  }
  return extra;
}

/** /ready's status, or why it did not answer within `timeoutMs`. */
async function readyStatus(adminPort: number, timeoutMs = 1000): Promise<number | string> {
  try {
    const res = await request(`http://127.0.0.1:${adminPort}/ready`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body.dump();
    return res.statusCode;
  } catch (err) {
    return `no answer within ${timeoutMs} ms (${(err as Error).name}: ${(err as Error).message})`;
  }
}

interface BatchOutcome {
  /** Requests the reference parsed from the batch. */
  readonly reference: Seen;
  readonly inbound: Seen;
  readonly outbound: Seen;
}

/**
 * One batch: every connection's bytes to the reference, then to the sidecar's
 * inbound and outbound listeners at once; then the judgement. Throws what went
 * wrong: a crash, /ready not 200 within 1 s, a malformed request at an app, or
 * a request an app saw that the reference did not parse.
 */
async function runBatch(mesh: LiveMesh, connections: ReadonlyArray<readonly Buffer[]>): Promise<BatchOutcome> {
  mesh.referenceSeen.length = 0;
  await Promise.all(connections.map((chunks) => exchange(mesh.referencePort, chunks)));
  const reference = mesh.referenceSeen.splice(0);

  for (const app of [mesh.inboundApp, mesh.outboundApp]) {
    app.seen.length = 0;
    app.problems.length = 0;
  }
  await Promise.all(connections.flatMap((chunks) => [exchange(mesh.sidecar.inbound, chunks), exchange(mesh.sidecar.outbound, chunks)]));
  await settle([mesh.inboundApp, mesh.outboundApp]);
  const outcome = { reference, inbound: [...mesh.inboundApp.seen], outbound: [...mesh.outboundApp.seen] };

  const failures: string[] = [];
  if (mesh.sidecar.child.exitCode !== null || mesh.sidecar.child.signalCode !== null) {
    failures.push(`the sidecar exited (${mesh.sidecar.child.exitCode ?? mesh.sidecar.child.signalCode}): ${mesh.stderr().slice(-3000)}`);
  } else {
    const ready = await readyStatus(mesh.sidecar.admin);
    if (ready !== 200) failures.push(`/ready: ${ready}`);
  }
  failures.push(...mesh.inboundApp.problems, ...mesh.outboundApp.problems);
  const madeUpInbound = notIn(outcome.inbound, reference);
  const madeUpOutbound = notIn(outcome.outbound, reference);
  if (madeUpInbound.length > 0) failures.push(`the inbound app saw requests the reference did not parse: ${JSON.stringify(madeUpInbound)} (reference: ${JSON.stringify(reference)})`);
  if (madeUpOutbound.length > 0) failures.push(`the outbound app saw requests the reference did not parse: ${JSON.stringify(madeUpOutbound)} (reference: ${JSON.stringify(reference)})`);
  if (failures.length > 0) throw new Error(failures.join('\n'));
  return outcome;
}

/** How a connection's bytes are kept in a stored input: base64 chunks (split points included). */
export type StoredConnection = string[];

const toChunks = (connection: StoredConnection): Buffer[] => connection.map((c) => Buffer.from(c, 'base64'));

/**
 * Registers a listener fuzz target against one live mesh: each input is a batch of connections
 * (at most `maxConnections`), run through runBatch. After the run, the generator's sanity: the
 * well-formed seeds and light mutations do reach the apps (a fuzzer whose every input is refused
 * at the door tests little).
 */
export function fuzzLiveMesh(name: 'listener-http1' | 'listener-http2', connection: fc.Arbitrary<StoredConnection>, maxConnections: number): void {
  let mesh: LiveMesh;
  let batches = 0;
  /** Batches in which each app saw at least one request. */
  const reached = { inbound: 0, outbound: 0 };
  let failed = false;
  fuzzTarget<StoredConnection[]>(
    {
      name,
      arbitrary: fc.array(connection, { minLength: 1, maxLength: maxConnections }),
      shortRuns: 10,
      shortMs: 5000,
      async check(connections) {
        batches++;
        try {
          const outcome = await runBatch(mesh, connections.map(toChunks));
          if (outcome.inbound.length > 0) reached.inbound++;
          if (outcome.outbound.length > 0) reached.outbound++;
        } catch (err) {
          failed = true;
          throw err;
        }
      },
    },
    () => {
      beforeAll(async () => {
        mesh = await startLiveMesh();
      }, 60_000);
      afterAll(async () => {
        await mesh?.close();
        if (batches >= 10 && !failed) expect({ inbound: reached.inbound / batches > 0.2, outbound: reached.outbound / batches > 0.2 }).toEqual({ inbound: true, outbound: true });
      }, 60_000);
    },
  );
}
