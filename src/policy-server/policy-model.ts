import { parsePolicyText } from '../policy/parse-documents.ts';
import { canonicalJson, compileSnapshot } from '../policy/snapshot.ts';
import { createPolicyValidator } from '../policy/validate.ts';
import type { PolicyModel } from './document-store.ts';
import type { SnapshotModel } from './snapshot-builder.ts';

/**
 * The policy model (src/policy) as the policy server uses it: the same
 * validator as `meshgate policy check` and the sidecar (default limits on
 * every side, so a document the server accepts is one a sidecar accepts),
 * one instance for the life of the server so its regex verdicts are cached.
 */
export function policyServerModel(): PolicyModel & SnapshotModel {
  const validator = createPolicyValidator();
  return {
    maxFileBytes: validator.limits.maxFileBytes,
    parseFile(text, file) {
      const parsed = parsePolicyText(text, file, { validator });
      return { documents: parsed.documents.map((d) => ({ index: d.source.index, document: d.document, digest: d.digest })), errors: parsed.errors };
    },
    compile: (documents, services, workload, destinations) => compileSnapshot(documents, services, workload, destinations),
    canonicalJson,
  };
}
