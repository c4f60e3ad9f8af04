import { resolvePolicyLimits } from '../policy/limits.ts';
import type { ParsedDocuments } from '../policy/parse-documents.ts';
import { parsePolicyText } from '../policy/parse-documents.ts';
import { createWorkerPolicyParser } from '../policy/parse-in-worker.ts';
import { canonicalJson, compileSnapshot } from '../policy/snapshot.ts';
import { createPolicyValidator } from '../policy/validate.ts';
import type { ParsedFile, PolicyModel } from './document-store.ts';
import type { SnapshotModel } from './snapshot-builder.ts';

/**
 * Files up to this many characters are parsed on the server's thread: within
 * the policy limits that costs a few tens of milliseconds at most (8 KiB of
 * CIDRs, the slowest to validate: about 40 ms), and most policy files are
 * smaller: not worth a worker's round trip.
 */
const IN_PROCESS_MAX_CHARS = 8192;

/**
 * The policy model (src/policy) as the policy server uses it: the same
 * validator as `meshgate policy check` and the sidecar (default limits on
 * every side, so a document the server accepts is one a sidecar accepts).
 * Larger files are parsed and validated on a worker thread, started on the
 * first one, so that a large file never stalls the streams and /live.
 * Both validators live as long as the server, so regex verdicts stay cached.
 * `close` stops the worker.
 */
export function policyServerModel(): PolicyModel & SnapshotModel & { close(): Promise<void> } {
  const limits = resolvePolicyLimits();
  const validator = createPolicyValidator({ limits });
  const parser = createWorkerPolicyParser({ limits });
  const toParsedFile = (parsed: ParsedDocuments): ParsedFile => ({
    documents: parsed.documents.map((d) => ({ index: d.source.index, document: d.document, digest: d.digest })),
    errors: parsed.errors,
  });
  return {
    maxFileBytes: limits.maxFileBytes,
    parseFile(text, file) {
      if (text.length <= IN_PROCESS_MAX_CHARS) return toParsedFile(parsePolicyText(text, file, { validator }));
      return parser.parse(text, file).then(toParsedFile);
    },
    compile: (documents, services, workload, destinations) => compileSnapshot(documents, services, workload, destinations),
    canonicalJson,
    close: () => parser.close(),
  };
}
