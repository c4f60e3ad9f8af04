import { wireDocumentOf } from '../../src/policy/policy-api.ts';
import { canonicalJson, documentDigest } from '../../src/policy/snapshot.ts';
import type { PolicyDocument, RegistryService } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import { createPolicySnapshotStore, snapshotFileFor } from '../../src/sidecar/policy/snapshot-store.ts';
import { createLogger } from '../../src/telemetry/logger.ts';

/*
 * Policy for a sidecar without a policy server: a last-known-good snapshot
 * written to its stateDir before it starts, which it enforces from boot while
 * no server answers (point `policy.servers` at a closed port).
 */

const validator = createPolicyValidator();

/** A document through the real validator: defaults filled, exactly as a sidecar receives it. */
export function policyDoc(kind: string, name: string, spec: Record<string, unknown>, namespace = 'shop'): PolicyDocument {
  const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind, metadata: { name, namespace }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.document.document;
}

/** `services` stands in for the registry a policy server would push (Route routes apply to those, not to static `services:`). */
export async function writeSnapshot(
  stateDir: string,
  workload: { service: string; namespace?: string },
  documents: PolicyDocument[],
  services: RegistryService[] = [],
  /** As the policy server sends them: Filter documents with their JavaScript (false: as an older server, without). */
  opts: { javascript?: boolean } = {},
): Promise<void> {
  const namespace = workload.namespace ?? 'shop';
  const store = createPolicySnapshotStore({ file: snapshotFileFor(stateDir, { service: workload.service, namespace }), logger: createLogger({ level: 'silent', name: 'test' }) });
  store.apply(
    {
      version: `static-${workload.service}`,
      documents: documents.map((d) => {
        const wire = wireDocumentOf(d, canonicalJson(d), documentDigest(d));
        if (opts.javascript !== false) return wire;
        const { javascript: _, ...sourceOnly } = wire;
        return sourceOnly;
      }),
      services,
    },
    Date.now(),
  );
  await store.flush();
}
