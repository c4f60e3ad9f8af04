import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatPolicyError } from '../../../src/policy/policy-error.ts';
import type { FolderDocumentStore } from '../../../src/policy-server/document-store.ts';
import { openDocumentStore } from '../../../src/policy-server/document-store.ts';
import { policyServerModel } from '../../../src/policy-server/policy-model.ts';
import { createPolicyServerMetrics } from '../../../src/policy-server/policy-server-metrics.ts';
import { captureLogs } from '../../helpers/log-capture.ts';
import { doc } from '../policy/helpers.ts';

/*
 * A Filter document naming a `sourceFile`: editing only the .ts file must roll
 * the new version out, as editing the YAML does (the policy server reads the
 * source into the document it serves).
 */
describe('a Filter whose source is a file of the policy folder', () => {
  let dir: string;
  let store: FolderDocumentStore | undefined;
  let model: ReturnType<typeof policyServerModel>;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-srcfile-'));
    model = policyServerModel({ folder: dir });
  });
  afterEach(async () => {
    await store?.close();
    await model.close();
    await rm(dir, { recursive: true, force: true });
  });

  const open = async (): Promise<FolderDocumentStore> => {
    const opened = await openDocumentStore({ folder: dir, debounceMs: 10, pollMs: 0 }, model, {
      logger: captureLogs({ name: 't', into: [] }).logger,
      metrics: createPolicyServerMetrics({ defaultMetrics: false }),
    });
    store = opened;
    return opened;
  };
  const servedSource = (s: FolderDocumentStore): unknown => (s.documents().find((d) => d.key === 'Filter/shop/check')?.document.spec as { source?: string } | undefined)?.source;
  const changed = (s: FolderDocumentStore): Promise<void> => new Promise((resolve) => s.onChange(resolve));

  it('serves a new version when only the source file changes, keeps the last good one while it does not compile, and picks up a file that appears later', async () => {
    await writeFile(path.join(dir, 'filter.yaml'), doc('Filter', 'sourceFile: check.ts', '{ name: check, namespace: shop }'));
    const s = await open();
    // Not there yet: refused, named by its file.
    expect(s.errors().map(formatPolicyError)).toEqual(['filter.yaml: document 0 (Filter/shop/check): spec.sourceFile: check.ts: cannot read (ENOENT)']);

    let next = changed(s);
    await writeFile(path.join(dir, 'check.ts'), "export default () => ({ deny: { code: 'v1' } });\n");
    await next;
    expect(servedSource(s)).toContain("'v1'");
    expect(s.errors()).toEqual([]);

    next = changed(s);
    await writeFile(path.join(dir, 'check.ts'), "export default () => ({ deny: { code: 'v2' } });\n");
    await next;
    expect(servedSource(s)).toContain("'v2'");

    next = changed(s);
    await writeFile(path.join(dir, 'check.ts'), 'export default () => ({ allow: true \n');
    await next;
    expect(servedSource(s)).toContain("'v2'"); // the last good version keeps serving
    expect(s.errors().map(formatPolicyError)[0]).toMatch(/^filter\.yaml: document 0 \(Filter\/shop\/check\): spec\.sourceFile: check\.ts: line \d+, column \d+: /);
    expect(s.stale()).toEqual(['Filter/shop/check']);
  });
});
