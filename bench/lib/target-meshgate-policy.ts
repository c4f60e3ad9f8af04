import { wireDocumentOf } from '../../src/policy/policy-api.ts';
import { documentDigest } from '../../src/policy/snapshot.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import { createPolicySnapshotStore, snapshotFileFor } from '../../src/sidecar/policy/snapshot-store.ts';
import type { DocumentEnvelope } from '../../src/sidecar/policy/subscriber-validate.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { probeUntilListening } from './http-probe.ts';
import type { TargetContext, TargetStart } from './target.ts';
import { startMeshgateSidecar } from './target-meshgate.ts';

/*
 * A sidecar with policy in force and no policy server or CA (bench:filters,
 * bench:ratelimit): the documents are validated with the project's policy
 * validator and written, through src/sidecar/policy/snapshot-store.ts (the code the
 * sidecar reads it with), as the last-known-good snapshot of the bench
 * workload in a temp stateDir. The `policy:` section points at 127.0.0.1:1,
 * where nothing answers, so the sidecar boots from that file. mTLS stays
 * DISABLE: a policy section needs no identity to boot from disk.
 */

/** The workload of the generated sidecar config (lib/target-meshgate.ts). */
export const BENCH_WORKLOAD = { service: 'bench', namespace: 'default' } as const;

export interface WrittenSnapshot {
  readonly file: string;
  /** Policy documents in force, as `Kind namespace/name`. */
  readonly documents: readonly string[];
}

/** Validates `rawDocuments` (input form) and writes them as the snapshot file in `stateDir`; `source` names them in errors. */
async function writePolicySnapshot(stateDir: string, rawDocuments: readonly unknown[], source: string): Promise<WrittenSnapshot> {
  const validator = createPolicyValidator();
  const envelopes: DocumentEnvelope[] = rawDocuments.map((raw, index) => {
    const result = validator.validate(raw, { file: source, index });
    if (!result.ok) throw new Error(`bench policy document ${index} rejected by src/policy: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
    const doc = result.document.document;
    // As a policy server sends it (a Filter with its JavaScript, so the sidecar does not strip types itself).
    return wireDocumentOf(doc, JSON.stringify(doc), documentDigest(doc));
  });
  const store = createPolicySnapshotStore({
    file: snapshotFileFor(stateDir, BENCH_WORKLOAD),
    logger: createLogger({ level: 'warn', name: 'bench-policy', destination: process.stderr }),
  });
  const applied = store.apply({ version: `bench:${source}`, documents: envelopes, services: [] }, Date.now());
  if (!applied.ack.accepted) throw new Error(`bench policy refused: ${applied.ack.errors.map((e) => `${e.document} ${e.field}: ${e.reason}`).join('; ')}`);
  await store.flush();
  const stats = store.stats();
  if (stats.writes !== 1) throw new Error(`cannot write ${store.file}: ${stats.lastWriteError ?? 'unknown error'}`);
  return { file: store.file, documents: envelopes.map((e) => `${e.kind} ${e.namespace}/${e.name}`) };
}

/**
 * One sidecar (inbound entry) booted from a snapshot of `rawDocuments`;
 * `extra` replaces other top-level sections of the generated config. Resolves
 * once the inbound listener accepts connections (the admin /live answers
 * before the policy is loaded and the listener opens).
 */
export async function startMeshgateWithPolicy(
  context: TargetContext,
  rawDocuments: readonly unknown[],
  source: string,
  extra: Record<string, unknown> = {},
): Promise<{ readonly start: TargetStart; readonly snapshot: WrittenSnapshot }> {
  const stateDir = context.group.tempDir('meshgate-bench-policy-state-');
  const snapshot = await writePolicySnapshot(stateDir, rawDocuments, source);
  const start = await startMeshgateSidecar(context, 'inbound', {
    ...extra,
    policy: {
      servers: ['127.0.0.1:1'],
      stateDir,
      // Few reconnect warnings while the load runs; the disk copy applies throughout.
      reconnect: { base: '30s', max: '5m' },
      maxStaleness: '1h',
    },
  });
  if (!start.ok) return { start, snapshot };
  try {
    await probeUntilListening(start.started.url, start.started.headers, context.startTimeoutMs);
  } catch (err) {
    await start.started.stop();
    return { start: { ok: false, reason: `inbound listener not open: ${(err as Error).message}` }, snapshot };
  }
  return { start, snapshot };
}
