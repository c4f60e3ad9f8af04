import { resolvePolicyLimits } from '../policy/limits.ts';
import { createWorkerPolicyParser } from '../policy/parse-in-worker.ts';
import { canonicalJson, compileSnapshot } from '../policy/snapshot.ts';
import type { PolicyModel } from './document-store.ts';
import type { SnapshotModel } from './snapshot-builder.ts';

/**
 * The policy model (src/policy) as the policy server uses it: the same
 * validator as `meshgate policy check` and the sidecar (default limits on
 * every side, so a document the server accepts is one a sidecar accepts),
 * run on a worker thread so that parsing a large file never stalls the
 * streams and /live; one worker for the life of the server, so its regex
 * verdicts stay cached. `close` stops it.
 */
export function policyServerModel(): PolicyModel & SnapshotModel & { close(): Promise<void> } {
  const limits = resolvePolicyLimits();
  const parser = createWorkerPolicyParser({ limits });
  return {
    maxFileBytes: limits.maxFileBytes,
    async parseFile(text, file) {
      const parsed = await parser.parse(text, file);
      return { documents: parsed.documents.map((d) => ({ index: d.source.index, document: d.document, digest: d.digest })), errors: parsed.errors };
    },
    compile: (documents, services, workload, destinations) => compileSnapshot(documents, services, workload, destinations),
    canonicalJson,
    close: () => parser.close(),
  };
}
