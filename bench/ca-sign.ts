/*
 * npm run bench:ca — CA signings per second, and Sign latency (p50, p99).
 *
 * Rows, in one run on one machine:
 *   signer only     the leaf signer called in-process: X.509 build + ECDSA P-256 signature (the floor)
 *   Sign, token     gRPC over TLS: bearer token verified (ES256), CSR checked, leaf signed, audit line written
 *   Sign, renewal   gRPC over mTLS: identity from the client certificate instead of a token
 *
 * The CA runs in this process on 127.0.0.1 port 0, with certs-init material
 * in a temporary folder. N clients (separate channels, so separate TLS
 * connections) each keep one call in flight until `--count` signings or
 * `--seconds` have passed, whichever comes first. Workload keys and CSRs are
 * made before timing starts: the CA's cost is what is measured.
 *
 * Options: --clients N (default 8), --count N (default 3000), --seconds S (default 10),
 *          --key-type ecdsa-p256|rsa-2048 (CA and workload keys; default ecdsa-p256)
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { loadCaMaterial } from '../src/ca/ca-material.ts';
import { startCa } from '../src/ca/ca-server.ts';
import { writeCertsInit } from '../src/ca/certs-init.ts';
import { createLeafSigner } from '../src/ca/leaf-signer.ts';
import { mintToken } from '../src/ca/token-mint.ts';
import { caConfigSchema } from '../src/config/ca-schema.ts';
import { systemClock } from '../src/core/clock.ts';
import type { CaClient } from '../src/identity/ca-api.ts';
import { bearerMetadata, createCaClient } from '../src/identity/ca-api.ts';
import type { KeyType } from '../src/identity/x509.ts';
import { createCsr, generateKeyPair, privateKeyToPem, x509 } from '../src/identity/x509.ts';
import { noTracing } from '../src/telemetry/tracing.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '8' },
    count: { type: 'string', default: '3000' },
    seconds: { type: 'string', default: '10' },
    'key-type': { type: 'string', default: 'ecdsa-p256' },
  },
  strict: true,
});
const clients = Number(values.clients);
const count = Number(values.count);
const seconds = Number(values.seconds);
const keyType = values['key-type'] as KeyType;
if (keyType !== 'ecdsa-p256' && keyType !== 'rsa-2048') throw new Error('--key-type: ecdsa-p256 or rsa-2048');

interface Row {
  readonly name: string;
  readonly signings: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Runs `workers` loops of `once` until `count` calls or `seconds` elapse; latencies in ms. */
async function drive(name: string, workers: number, once: (worker: number) => Promise<unknown>): Promise<Row> {
  const latencies: number[] = [];
  let started = 0;
  const deadline = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      while (started < count && performance.now() < deadline) {
        started++;
        const t = performance.now();
        await once(worker);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { name, signings: latencies.length, perSecond: latencies.length / elapsed, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
}

const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-bench-ca-'));
try {
  process.stderr.write(`bench:ca: ${clients} clients, up to ${count} signings or ${seconds}s per row, ${keyType}, ${cpus().length} CPUs, Node ${process.version}\n`);
  await writeCertsInit({ outDir: dir, trustDomain: 'cluster.local', keyType, intermediate: true, rootTtlMs: 86_400_000 * 365, force: false, clock: systemClock });
  const config = caConfigSchema.parse({
    trustDomain: 'cluster.local',
    listen: { address: '127.0.0.1', port: 0 },
    admin: { address: '127.0.0.1', port: 0 },
    signing: { certFile: 'intermediate-ca.pem', keyFile: 'intermediate-ca.key' },
    trustBundle: { files: ['trust-bundle.pem'] },
    tokens: { issuers: ['meshgate'], publicKeyFile: 'token-signing.pub.pem', algorithms: ['ES256'] },
    rateLimit: { perIdentity: { requests: 1_000_000, window: '1m' } },
    audit: { file: 'audit.jsonl' },
    log: { level: 'warn' },
  });
  const logger = pino({ level: 'warn' });
  const ca = await startCa(config, { logger, clock: systemClock, configDir: dir, configFile: 'bench', tracing: noTracing('meshgate-ca') });

  const workloads = await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const keys = await generateKeyPair(keyType);
      const token = await mintToken({
        keyPem: await readFile(path.join(dir, 'token-signing.key'), 'utf8'),
        namespace: 'bench',
        serviceAccount: `client-${i}`,
        ttlMs: 3_600_000,
        issuer: 'meshgate',
        audience: 'meshgate-ca',
        clock: systemClock,
      });
      return { keys, keyPem: await privateKeyToPem(keys.privateKey), csr: await createCsr(keys, keyType), token };
    }),
  );
  const roots = Buffer.from(ca.trustBundlePem.join(''));
  const address = `127.0.0.1:${ca.grpcPort}`;
  const tokenClients: CaClient[] = workloads.map(() => createCaClient(address, grpc.credentials.createSsl(roots)));
  // Warm-up: connections, JIT, and a certificate per workload for the renewal row.
  const first = await Promise.all(workloads.map((w, i) => tokenClients[i]!.sign({ csrPem: w.csr }, bearerMetadata(w.token))));
  const renewClients: CaClient[] = workloads.map((w, i) => createCaClient(address, grpc.credentials.createSsl(roots, Buffer.from(w.keyPem), Buffer.from(first[i]!.certChainPem.join('')))));
  await Promise.all(workloads.map((w, i) => renewClients[i]!.sign({ csrPem: w.csr })));

  const material = await loadCaMaterial(config, { clock: systemClock, resolvePath: (f) => path.join(dir, f), configFile: 'bench' });
  const signer = await createLeafSigner(material, { clock: systemClock });
  const publicKeys = await Promise.all(workloads.map((w) => x509.PublicKey.create(w.keys.publicKey)));

  const rows: Row[] = [];
  rows.push(await drive('signer only (in-process)', clients, (i) => signer.sign({ publicKey: publicKeys[i]!, keyType, spiffeId: `spiffe://cluster.local/ns/bench/sa/client-${i}`, ttlMs: 3_600_000 })));
  rows.push(await drive('Sign over gRPC+TLS, token', clients, (i) => tokenClients[i]!.sign({ csrPem: workloads[i]!.csr }, bearerMetadata(workloads[i]!.token))));
  rows.push(await drive('Sign over gRPC+mTLS, renewal', clients, (i) => renewClients[i]!.sign({ csrPem: workloads[i]!.csr })));

  for (const client of [...tokenClients, ...renewClients]) client.close();
  await ca.close();

  const header = ['row', 'signings', 'signings/s', 'p50 ms', 'p99 ms'];
  const lines = rows.map((r) => [r.name, String(r.signings), r.perSecond.toFixed(0), r.p50Ms.toFixed(2), r.p99Ms.toFixed(2)]);
  const widths = header.map((h, c) => Math.max(h.length, ...lines.map((l) => l[c]!.length)));
  const fmt = (cells: string[]): string => `| ${cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(' | ')} |`;
  process.stdout.write(`${[fmt(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...lines.map(fmt)].join('\n')}\n`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
