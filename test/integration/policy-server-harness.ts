import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { POLICY_SERVER_ROLE } from '../../src/cli/roles.ts';
import { parseConfigText } from '../../src/config/load.ts';
import type { PolicyServerConfigInput } from '../../src/config/policy-server-schema.ts';
import { policyServerConfigSchema } from '../../src/config/policy-server-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import { certificateFacts, createCsr, generateKeyPair, privateKeyToPem } from '../../src/identity/x509.ts';
import type { ClientIdentity, DocumentError, Hello, PolicyClient, PolicyStream, WireSnapshot } from '../../src/policy/policy-api.ts';
import { ackRequest, createPolicyClient, helloRequest, policyChannelCredentials, policyServerSpiffeId } from '../../src/policy/policy-api.ts';
import type { PolicyServerDeps, RunningPolicyServer } from '../../src/policy-server/policy-server.ts';
import { startPolicyServer } from '../../src/policy-server/policy-server.ts';
import { startTracing } from '../../src/telemetry/tracing.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { bearerMetadata, startTestCa } from '../helpers/ca-fixture.ts';
import { eventually as waitUntil } from '../helpers/eventually.ts';
import { captureLogs } from '../helpers/log-capture.ts';

/*
 * In-process policy servers for the integration tests: a test CA, a policy
 * folder in a temporary directory, servers on 127.0.0.1 port 0 that get
 * their certificate from the CA like in production, and sidecar-like
 * subscribers with their own CA-issued client certificates.
 */

export const TRUST_DOMAIN = 'cluster.local';

export interface PolicyHarness {
  readonly ca: TestCa;
  readonly folder: string;
  readonly dir: string;
  start(overrides?: Partial<PolicyServerConfigInput>, deps?: Partial<PolicyServerDeps>): Promise<TestPolicyServer>;
  /** A client certificate from the CA for spiffe://cluster.local/ns/<namespace>/sa/<serviceAccount>. */
  identity(namespace: string, serviceAccount: string): Promise<WorkloadCredentials>;
  /** Writes a policy file (relative to the folder). */
  write(file: string, text: string): Promise<void>;
  close(): Promise<void>;
}

export interface TestPolicyServer {
  readonly server: RunningPolicyServer;
  readonly address: string;
  readonly logs: Array<Record<string, unknown>>;
  subscribe(identity: ClientIdentity, hello: Hello, opts?: { autoAck?: boolean }): TestSubscriber;
  close(): Promise<void>;
}

export interface TestSubscriber {
  readonly stream: PolicyStream;
  /** Every snapshot received, in order. */
  readonly received: WireSnapshot[];
  /** The next snapshot not yet returned by next()/until(). */
  next(timeoutMs?: number): Promise<WireSnapshot>;
  /** Skips snapshots until one satisfies `predicate`. */
  until(predicate: (s: WireSnapshot) => boolean, timeoutMs?: number): Promise<WireSnapshot>;
  ack(version: string, accepted?: boolean, errors?: DocumentError[]): void;
  /** Resolves with the final status of the stream. */
  readonly ended: Promise<grpc.StatusObject>;
  close(): void;
}

/**
 * The config of a meshed sidecar for workload `name` in namespace shop: mTLS
 * STRICT, a certificate from the harness CA (bootstrap token written to a
 * file) and policy from `servers`. Tests spread their own sections over it.
 */
export async function meshSidecarConfig(h: PolicyHarness, name: string, policy: { servers: string[]; stateDir: string }) {
  const tokenFile = path.join(h.dir, `${name}.token`);
  await writeFile(tokenFile, await h.ca.token('shop', name));
  return {
    workload: { service: name, namespace: 'shop' },
    mtls: { mode: 'STRICT' as const },
    identity: { ca: { address: h.ca.address, trustBundleFile: path.join(h.ca.dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile },
    policy: { servers: policy.servers, stateDir: policy.stateDir, reconnect: { base: '50ms', max: '200ms' } },
  };
}

export async function createPolicyHarness(): Promise<PolicyHarness> {
  const ca = await startTestCa();
  const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-policy-'));
  const folder = path.join(dir, 'policies');
  const tokenFile = path.join(dir, 'policy-server.token');
  await writeFile(tokenFile, await ca.token('meshgate-system', 'policy-server', 24 * 3_600_000));
  const servers: TestPolicyServer[] = [];
  let started = 0;

  return {
    ca,
    folder,
    dir,
    async start(overrides = {}, deps = {}) {
      const n = started++;
      const input: PolicyServerConfigInput = {
        identity: {
          trustDomain: TRUST_DOMAIN,
          ca: { address: ca.address, trustBundleFile: path.join(ca.dir, 'trust-bundle.pem'), serverName: 'localhost' },
          tokenFile,
        },
        listen: { address: '127.0.0.1', port: 0 },
        admin: { address: '127.0.0.1', port: 0 },
        policies: { folder },
        push: { debounce: '20ms' },
        // Versions without the warm-up's suffix, whatever the timing: tests of the warm-up opt in.
        registry: { warmup: '0s' },
        adminApi: { audit: { file: path.join(dir, `audit-${n}.jsonl`) } },
        log: { level: 'info' },
        ...overrides,
      };
      const config = parseConfigText(JSON.stringify(input), 'test-policy-server.yaml', policyServerConfigSchema);
      const { logger, lines: logs } = captureLogs({ level: config.log.level, name: 'policy-server' });
      const tracing = deps.tracing ?? (await startTracing(config.telemetry.tracing, {}, { logger, ...POLICY_SERVER_ROLE.tracing(config) }));
      const server = await startPolicyServer(config, { logger, clock: systemClock, random: Math.random, configDir: dir, defaultServerId: `replica-${n}`, ...deps, tracing });
      const address = `127.0.0.1:${server.grpcPort}`;
      const clients: PolicyClient[] = [];
      const subs: TestSubscriber[] = [];
      const running: TestPolicyServer = {
        server,
        address,
        logs,
        subscribe(identity, hello, opts = {}) {
          const client = createPolicyClient(address, policyChannelCredentials(identity, policyServerSpiffeId(TRUST_DOMAIN)));
          clients.push(client);
          const sub = openSubscriber(client, hello, opts.autoAck ?? true);
          subs.push(sub);
          return sub;
        },
        async close() {
          for (const s of subs) s.close();
          for (const c of clients) c.close();
          await server.close();
          if (!deps.tracing) await tracing.shutdown();
        },
      };
      servers.push(running);
      return running;
    },
    async identity(namespace, serviceAccount) {
      const keys = await generateKeyPair('ecdsa-p256');
      const client = ca.client();
      const signed = await client.sign({ csrPem: await createCsr(keys, 'ecdsa-p256') }, bearerMetadata(await ca.token(namespace, serviceAccount)));
      return { keyPem: await privateKeyToPem(keys.privateKey), chainPem: signed.certChainPem, trustBundlePem: signed.trustBundlePem, facts: certificateFacts(signed.certChainPem[0]!) };
    },
    async write(file, text) {
      const { writeFileAtomic } = await import('../../src/policy-server/atomic-file.ts');
      await writeFileAtomic(path.join(folder, file), text);
    },
    async close() {
      for (const s of servers) await s.close();
      await ca.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A sidecar-like subscriber: Hello first, then (with autoAck) an accepting Ack for every snapshot. */
export function openSubscriber(client: PolicyClient, hello: Hello, autoAck: boolean): TestSubscriber {
  const stream = client.subscribe();
  const received: WireSnapshot[] = [];
  let consumed = 0;
  const waiters: Array<() => void> = [];
  let endedStatus: grpc.StatusObject | undefined;
  const ended = new Promise<grpc.StatusObject>((resolve) => {
    stream.on('status', (status: grpc.StatusObject) => {
      endedStatus = status;
      resolve(status);
      for (const wake of waiters.splice(0)) wake();
    });
  });
  stream.on('error', () => {
    // The status event carries it.
  });
  stream.on('data', (snapshot: WireSnapshot) => {
    received.push(snapshot);
    if (autoAck) stream.write(ackRequest(snapshot.version, true));
    for (const wake of waiters.splice(0)) wake();
  });
  stream.write(helloRequest(hello));

  const until = async (predicate: (s: WireSnapshot) => boolean, timeoutMs = 5_000): Promise<WireSnapshot> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (consumed < received.length) {
        const s = received[consumed++]!;
        if (predicate(s)) return s;
      }
      if (endedStatus) throw new Error(`stream ended (${endedStatus.code} ${endedStatus.details}) before the expected snapshot`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching snapshot within ${timeoutMs} ms (received ${received.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
  return {
    stream,
    received,
    next: (timeoutMs) => until(() => true, timeoutMs),
    until,
    ack: (version, accepted = true, errors = []) => void stream.write(ackRequest(version, accepted, errors)),
    ended,
    close: () => stream.cancel(),
  };
}

/** Polls `check` on every event-loop turn until it holds (for state with no event of its own, e.g. the directory). */
export async function eventually(check: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  await waitUntil(check, { timeoutMs, what, intervalMs: 5 });
}
