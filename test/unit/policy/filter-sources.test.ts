import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkFilterDocuments } from '../../../src/policy/filter-sources.ts';
import { parsePolicyFolder } from '../../../src/policy/parse-documents.ts';
import { formatPolicyError } from '../../../src/policy/policy-error.ts';
import { createSandboxLoader } from '../../../src/sandbox/quickjs-sandbox.ts';
import { doc } from './helpers.ts';

let root: string;
let folder: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'meshgate-fsrc-'));
  folder = path.join(root, 'policies');
  await mkdir(path.join(folder, 'checks'), { recursive: true });
  await writeFile(path.join(root, 'outside.ts'), 'export default () => ({ allow: true });');
  await symlink(path.join(root, 'outside.ts'), path.join(folder, 'checks', 'link.ts'));
  await writeFile(path.join(folder, 'checks', 'good.ts'), "import type { Call } from 'meshgate/filter';\nexport default (call: Call) => ({ allow: call.path !== '/x' });\n");
  await writeFile(path.join(folder, 'checks', 'broken.ts'), 'export default function check(call) {\n  return { allow: true \n}\n');
  await writeFile(
    path.join(folder, 'filters.yaml'),
    [
      doc('Filter', 'sourceFile: checks/good.ts', '{ name: good, namespace: shop }'),
      doc('Filter', 'sourceFile: checks/broken.ts', '{ name: broken, namespace: shop }'),
      doc('Filter', 'sourceFile: checks/link.ts', '{ name: escapes, namespace: shop }'),
      doc('Filter', 'sourceFile: checks/missing.ts', '{ name: missing, namespace: shop }'),
      doc('Filter', 'source: "export const notAFunction = 1;"', '{ name: no-export, namespace: shop }'),
      doc('Filter', 'source: "enum E { A }\\nexport default () => ({ allow: true });"', '{ name: enum, namespace: shop }'),
    ].join('---\n'),
  );
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('Filter sources, as the policy server and policy check see them', () => {
  it('inlines a source file of the folder, and refuses what does not compile with file, line and column', async () => {
    const parsed = await checkFilterDocuments(await parsePolicyFolder(folder, { relativePaths: true }), { sandbox: createSandboxLoader(), folder });
    expect(parsed.documents.map((d) => d.key)).toEqual(['Filter/shop/good']);
    const good = parsed.documents[0]!;
    expect(good.document.spec.source).toContain("call.path !== '/x'");
    expect(parsed.errors.map(formatPolicyError)).toEqual([
      "filters.yaml: document 1 (Filter/shop/broken): spec.sourceFile: checks/broken.ts: line 3, column 1: Expected '}', got '<eof>'",
      'filters.yaml: document 2 (Filter/shop/escapes): spec.sourceFile: checks/link.ts: leads out of the policy folder',
      'filters.yaml: document 3 (Filter/shop/missing): spec.sourceFile: checks/missing.ts: cannot read (ENOENT)',
      'filters.yaml: document 4 (Filter/shop/no-export): spec.source: line 1, column 1: the module must export its check as a function: `export default function check(call, config) {...}`',
      'filters.yaml: document 5 (Filter/shop/enum): spec.source: line 1, column 1: TypeScript enum is not supported in strip-only mode',
    ]);
  });

  it('refuses a source file where there is no policy folder (a document of the admin API has none to read)', async () => {
    const parsed = await checkFilterDocuments(await parsePolicyFolder(folder, { relativePaths: true }), { sandbox: createSandboxLoader() });
    expect(parsed.errors.map(formatPolicyError)).toContain('filters.yaml: document 0 (Filter/shop/good): spec.sourceFile: checks/good.ts: only documents of the policy folder may name a source file');
  });
});
