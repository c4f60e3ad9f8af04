import type { PolicyDocument } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';

/** A validated Filter document (defaults filled in by the schema), as a sidecar gets it. */
export function filterDocument(spec: Record<string, unknown>, meta: { name?: string; namespace?: string } = {}): PolicyDocument {
  const raw = { apiVersion: 'meshgate.dev/v1', kind: 'Filter', metadata: { name: meta.name ?? 'check', namespace: meta.namespace ?? 'shop' }, spec };
  const result = createPolicyValidator().validate(raw, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(`invalid Filter document: ${JSON.stringify(result.errors)}`);
  return result.document.document;
}
