import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { startCa } from '../ca/ca-server.ts';
import { writeCertsInit } from '../ca/certs-init.ts';
import { mintToken } from '../ca/token-mint.ts';
import { caConfigSchema } from '../config/ca-schema.ts';
import { parseConfigText } from '../config/load.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../telemetry/logger.ts';
import { noTracing } from '../telemetry/tracing.ts';

export interface DemoCa {
  /** The temp folder holding the CA material (removed on close). */
  readonly dir: string;
  readonly address: string;
  readonly trustBundleFile: string;
  /** Writes a bootstrap token for `ns/sa` and returns its file. */
  tokenFile(ns: string, sa: string): Promise<string>;
  close(): Promise<void>;
}

/** A throw-away CA for the demo: `certs init` into a temp folder, served on a free loopback port. */
export async function startDemoCa(deps: { clock: Clock; logger: Logger }): Promise<DemoCa> {
  const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-demo-'));
  await writeCertsInit({ outDir: dir, trustDomain: 'cluster.local', keyType: 'ecdsa-p256', intermediate: true, rootTtlMs: 86_400_000, force: false, clock: deps.clock });
  const generated = parseYaml(await readFile(path.join(dir, 'ca.yaml'), 'utf8')) as Record<string, unknown>;
  const config = parseConfigText(
    JSON.stringify({ ...generated, listen: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 }, log: { level: 'warn' } }),
    'demo:ca.yaml',
    caConfigSchema,
  );
  const ca = await startCa(config, { logger: deps.logger, clock: deps.clock, configDir: dir, tracing: noTracing('meshgate-ca') });
  const keyPem = await readFile(path.join(dir, 'token-signing.key'), 'utf8');
  return {
    dir,
    address: `127.0.0.1:${ca.grpcPort}`,
    trustBundleFile: path.join(dir, 'trust-bundle.pem'),
    async tokenFile(ns, sa) {
      const file = path.join(dir, `${ns}-${sa}.token`);
      const token = await mintToken({ keyPem, namespace: ns, serviceAccount: sa, ttlMs: 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: deps.clock });
      const { writeFile } = await import('node:fs/promises');
      await writeFile(file, token, { mode: 0o600 });
      return file;
    },
    async close() {
      await ca.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
