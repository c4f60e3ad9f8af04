import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parse as parseYaml } from 'yaml';
import type { RunningCa } from '../../src/ca/ca-server.ts';
import { startCa } from '../../src/ca/ca-server.ts';
import { writeCertsInit } from '../../src/ca/certs-init.ts';
import { mintToken } from '../../src/ca/token-mint.ts';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { systemClock } from '../../src/core/clock.ts';
import { bearerMetadata, createCaClient } from '../../src/identity/ca-api.ts';
import { createCsr, generateKeyPair, privateKeyToPem } from '../../src/identity/x509.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { noTracing } from '../../src/telemetry/tracing.ts';
import type { TlsKeyType } from './tls-settings.ts';

/*
 * The PKI of `npm run bench:tls`, all from meshgate's own code: `certs init`
 * material in a temp dir (root signs leaves, the CLI's default), the CA
 * running in the harness process (idle while load runs: certificates are
 * issued before, and last 24 h), bootstrap tokens, and real mesh certificates
 * it issues through its API for the load generator and for nginx.
 */

export const TRUST_DOMAIN = 'cluster.local';
export const BENCH_NAMESPACE = 'bench';

export interface BenchPki {
  readonly dir: string;
  /** host:port of the CA's gRPC API. */
  readonly caAddress: string;
  /** PEM root(s): what the sidecar, nginx and the client trust. */
  readonly trustBundleFile: string;
  /** Writes a bootstrap token for bench/<sa> and returns its path (for the sidecar's identity.tokenFile). */
  writeToken(serviceAccount: string): Promise<string>;
  /** Key and chain (leaf first) issued by the CA for spiffe://cluster.local/ns/bench/sa/<sa>, written as <sa>.key / <sa>.pem. */
  issue(serviceAccount: string): Promise<IssuedFiles>;
  close(): Promise<void>;
}

interface IssuedFiles {
  readonly spiffeId: string;
  readonly keyFile: string;
  readonly chainFile: string;
}

export async function startBenchPki(dir: string, keyType: TlsKeyType): Promise<BenchPki> {
  await writeCertsInit({ outDir: dir, trustDomain: TRUST_DOMAIN, keyType, intermediate: false, rootTtlMs: 86_400_000, force: false, clock: systemClock });
  // The generated ca.yaml, as test/helpers/ca-fixture.ts uses it, on a free loopback port.
  const input = {
    ...(parseYaml(await readFile(path.join(dir, 'ca.yaml'), 'utf8')) as Record<string, unknown>),
    listen: { address: '127.0.0.1', port: 0 },
    admin: { address: '127.0.0.1', port: 0 },
    audit: { file: 'audit.jsonl' },
    rateLimit: { perIdentity: { requests: 1000, window: '1m' } },
    log: { level: 'warn' },
  };
  const config = parseConfigText(JSON.stringify(input), 'bench-ca.yaml', caConfigSchema);
  const logger = createLogger({ level: 'warn', name: 'ca', destination: process.stderr });
  const ca: RunningCa = await startCa(config, { logger, clock: systemClock, configDir: dir, configFile: 'bench-ca.yaml', tracing: noTracing('meshgate-ca') });
  const caAddress = `127.0.0.1:${ca.grpcPort}`;
  const tokenKeyPem = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
  const client = createCaClient(caAddress, grpc.credentials.createSsl(Buffer.from(ca.trustBundlePem.join(''))));

  const token = (serviceAccount: string): Promise<string> =>
    mintToken({ keyPem: tokenKeyPem, namespace: BENCH_NAMESPACE, serviceAccount, ttlMs: 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock });

  return {
    dir,
    caAddress,
    trustBundleFile: path.join(dir, 'trust-bundle.pem'),
    async writeToken(serviceAccount) {
      const file = path.join(dir, `${serviceAccount}.token`);
      await writeFile(file, await token(serviceAccount), { mode: 0o600 });
      return file;
    },
    async issue(serviceAccount) {
      const keys = await generateKeyPair(keyType);
      const res = await client.sign({ csrPem: await createCsr(keys, keyType) }, bearerMetadata(await token(serviceAccount)));
      const keyFile = path.join(dir, `${serviceAccount}.key`);
      const chainFile = path.join(dir, `${serviceAccount}.pem`);
      await writeFile(keyFile, await privateKeyToPem(keys.privateKey), { mode: 0o600 });
      await writeFile(chainFile, res.certChainPem.map((c) => (c.endsWith('\n') ? c : `${c}\n`)).join(''));
      return { spiffeId: res.spiffeId, keyFile, chainFile };
    },
    async close() {
      client.close();
      await ca.close();
    },
  };
}
