import { checkFilterDocuments } from '../policy/filter-sources.ts';
import { resolvePolicyLimits } from '../policy/limits.ts';
import type { ParsedDocuments } from '../policy/parse-documents.ts';
import { parsePolicyText } from '../policy/parse-documents.ts';
import { createWorkerPolicyParser } from '../policy/parse-in-worker.ts';
import { canonicalJson, compileSnapshot } from '../policy/snapshot.ts';
import { createPolicyValidator } from '../policy/validate.ts';
import { createSandboxLoader } from '../sandbox/quickjs-sandbox.ts';
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
export function policyServerModel(options: { readonly folder?: string } = {}): PolicyModel & SnapshotModel & { close(): Promise<void> } {
  const limits = resolvePolicyLimits();
  const validator = createPolicyValidator({ limits });
  const parser = createWorkerPolicyParser({ limits });
  // Filter documents: sourceFile read from the folder, source compiled in the sandbox (loaded on the first Filter).
  const sandbox = createSandboxLoader();
  const withSources = (parsed: ParsedDocuments): Promise<ParsedDocuments> => checkFilterDocuments(parsed, { sandbox, folder: options.folder });
  const toParsedFile = (parsed: ParsedDocuments): ParsedFile => ({
    documents: parsed.documents.map((d) => ({ index: d.source.index, document: d.document, digest: d.digest })),
    errors: parsed.errors,
    ...(parsed.sourceFiles ? { sourceFiles: parsed.sourceFiles } : {}),
  });
  return {
    maxFileBytes: limits.maxFileBytes,
    parseFile(text, file) {
      if (text.length <= IN_PROCESS_MAX_CHARS) {
        const parsed = parsePolicyText(text, file, { validator });
        // Synchronous unless the file has a Filter document: most files keep the old, immediate path.
        return parsed.documents.some((d) => d.document.kind === 'Filter') ? withSources(parsed).then(toParsedFile) : toParsedFile(parsed);
      }
      return parser.parse(text, file).then(withSources).then(toParsedFile);
    },
    compile: (documents, services, workload, destinations) => compileSnapshot(documents, services, workload, destinations),
    canonicalJson,
    close: () => parser.close(),
  };
}
