import { describe, expect, it } from 'vitest';
import { canonicalJson, compileSnapshot, documentDigest } from '../../../src/policy/snapshot.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import type { StoredDocument } from '../../../src/policy-server/contracts.ts';
import { createSnapshotBuilder } from '../../../src/policy-server/snapshot-builder.ts';
import { policyDoc } from '../../helpers/static-policy.ts';

const stored = (document: PolicyDocument): StoredDocument => ({
  key: `${document.kind}/${document.metadata.namespace}/${document.metadata.name}`,
  document,
  digest: documentDigest(document),
  file: 'test.yaml',
});

describe('the snapshot a policy server sends', () => {
  it("carries each Filter's source as JavaScript, its types stripped with every position kept, so sidecars need not strip", () => {
    const source = 'export default (call: { path: string }, config: unknown): { allow: true } => ({ allow: true });';
    const filter = policyDoc('Filter', 'own', { source }, 'shop');
    const allow = policyDoc('AuthorizationPolicy', 'all', { action: 'ALLOW', rules: [{}] }, 'shop');
    const builder = createSnapshotBuilder({ documents: () => [stored(filter), stored(allow)], services: () => [] }, { compile: compileSnapshot, canonicalJson }, 'test');
    const { message } = builder.build({ service: 'orders', namespace: 'shop' }, undefined);
    const byKind = new Map(message.documents.map((d) => [d.kind, d]));
    const javascript = byKind.get('Filter')?.javascript;
    const blank = (text: string, ...types: string[]) => types.reduce((out, t) => out.replace(t, ' '.repeat(t.length)), text);
    expect(javascript).toBe(blank(source, ': { path: string }', ': unknown', ': { allow: true }'));
    expect(javascript).toHaveLength(source.length);
    expect(byKind.get('AuthorizationPolicy')?.javascript).toBeUndefined();
  });
});
