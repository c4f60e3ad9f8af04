import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parse as parseYaml } from 'yaml';
import type { RunningCa } from '../../src/ca/ca-server.ts';
import { startCa } from '../../src/ca/ca-server.ts';
import { writeCertsInit } from '../../src/ca/certs-init.ts';
import { mintToken } from '../../src/ca/token-mint.ts';
import { CA_ROLE } from '../../src/cli/roles.ts';
import type { CaConfigInput } from '../../src/config/ca-schema.ts';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { parseConfigText } from '../../src/config/load.ts';
import type { Clock } from '../../src/core/clock.ts';
import type { CaClient } from '../../src/identity/ca-api.ts';
import { bearerMetadata, createCaClient } from '../../src/identity/ca-api.ts';
import type { KeyType } from '../../src/identity/x509.ts';
import { startTracing } from '../../src/telemetry/tracing.ts';
import { createFakeClock } from './fake-clock.ts';
import { captureLogs } from './log-capture.ts';

/**
 * Writes fresh CA material with `certs init` into a temporary folder (never
 * committed), for tests that need a CA on disk without running one.
 */
export async function createCaMaterialDir(opts: { keyType?: KeyType; intermediate?: boolean; trustDomain?: string; clock?: Clock } = {}): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-ca-'));
  await writeCertsInit({
    outDir: dir,
    trustDomain: opts.trustDomain ?? 'cluster.local',
    keyType: opts.keyType ?? 'ecdsa-p256',
    intermediate: opts.intermediate ?? false,
    rootTtlMs: 10 * 365 * 86_400_000,
    force: false,
    clock: opts.clock ?? { now: () => Date.now(), monotonic: () => performance.now() },
  });
  return dir;
}

export interface TestCa {
  readonly ca: RunningCa;
  readonly dir: string;
  readonly address: string;
  /** Starts at the real time (the TLS stack checks the CA's serving certificate against it) and moves only when told. */
  readonly clock: ReturnType<typeof createFakeClock>;
  readonly auditFile: string;
  readonly logs: Array<Record<string, unknown>>;
  readonly rootsPem: string;
  /** A bootstrap token for `ns`/`sa` signed with the folder's token-signing key. */
  token(ns: string, sa: string, ttlMs?: number): Promise<string>;
  readonly tokenKeyPem: string;
  /** A client trusting the CA's roots; with `key`+`chain`, it presents that client certificate. */
  client(identity?: { keyPem: string; chainPem: string }): CaClient;
  /** Every audit record written so far. */
  audit(): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}

/**
 * An in-process CA on 127.0.0.1 port 0 with material from `certs init`, a
 * fake clock and an audit file. `overrides` replaces top-level sections of
 * the generated ca.yaml (paths in it are relative to `dir`).
 */
export async function startTestCa(opts: { keyType?: KeyType; intermediate?: boolean; dir?: string; overrides?: Partial<CaConfigInput> } = {}): Promise<TestCa> {
  const clock = createFakeClock(Date.now());
  const dir = opts.dir ?? (await createCaMaterialDir({ ...opts, clock }));
  const auditFile = path.join(dir, 'audit.jsonl');
  const input: CaConfigInput = {
    ...(await rawYaml(path.join(dir, 'ca.yaml'))),
    listen: { address: '127.0.0.1', port: 0 },
    admin: { address: '127.0.0.1', port: 0 },
    audit: { file: 'audit.jsonl' },
    log: { level: 'info' },
    ...opts.overrides,
  } as CaConfigInput;
  const config = parseConfigText(JSON.stringify(input), 'test-ca.yaml', caConfigSchema);
  const { logger, lines: logs } = captureLogs({ level: config.log.level, name: 'ca' });
  const tracing = await startTracing(config.telemetry.tracing, {}, { logger, ...CA_ROLE.tracing(config) });
  const ca = await startCa(config, { logger, clock, configDir: dir, configFile: 'test-ca.yaml', tracing });
  const rootsPem = ca.trustBundlePem.join('');
  const tokenKeyPem = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
  const address = `127.0.0.1:${ca.grpcPort}`;
  const clients: CaClient[] = [];
  return {
    ca,
    dir,
    address,
    clock,
    auditFile,
    logs,
    rootsPem,
    tokenKeyPem,
    token: (ns, sa, ttlMs = 3_600_000) => mintToken({ keyPem: tokenKeyPem, namespace: ns, serviceAccount: sa, ttlMs, issuer: 'meshgate', audience: 'meshgate-ca', clock }),
    client(identity) {
      const credentials = identity
        ? grpc.credentials.createSsl(Buffer.from(rootsPem), Buffer.from(identity.keyPem), Buffer.from(identity.chainPem))
        : grpc.credentials.createSsl(Buffer.from(rootsPem));
      const client = createCaClient(address, credentials);
      clients.push(client);
      return client;
    },
    async audit() {
      const text = await readFile(auditFile, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    async close() {
      for (const client of clients) client.close();
      await ca.close();
      await tracing.shutdown();
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

export { bearerMetadata };

async function rawYaml(file: string): Promise<Record<string, unknown>> {
  return parseYaml(await readFile(file, 'utf8')) as Record<string, unknown>;
}
