import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listPolicyFiles, parsePolicyFiles, parsePolicyFolder, parsePolicyText } from '../../../src/policy/parse-documents.ts';
import { formatPolicyError } from '../../../src/policy/policy-error.ts';
import { doc } from './helpers.ts';

const allow = (name: string) => doc('AuthorizationPolicy', 'rules: [{ to: [{ methods: [GET] }] }]', `{ name: ${name}, namespace: shop }`);
const deny = (name: string) => doc('IPAccessPolicy', 'deny: [10.0.0.0/8]', `{ name: ${name}, namespace: shop }`);

describe('parsePolicyText', () => {
  it('rejects the bad 2nd of 3 documents alone; the other two apply', () => {
    const bad = doc('RateLimitPolicy', 'rules: [{ name: a, key: [source.ip], limit: { requests: 0, per: 1s } }]', '{ name: rl, namespace: shop }');
    const result = parsePolicyText(`${allow('a')}---\n${bad}---\n${deny('c')}`, 'policies/shop.yaml');
    expect(result.documents.map((d) => [d.key, d.source.index])).toEqual([
      ['AuthorizationPolicy/shop/a', 0],
      ['IPAccessPolicy/shop/c', 2],
    ]);
    expect(result.errors).toEqual([
      { source: { file: 'policies/shop.yaml', index: 1 }, document: 'RateLimitPolicy/shop/rl', field: 'spec.rules[0].limit.requests', reason: 'must be at least 1, got 0' },
    ]);
    expect(result.errors.map(formatPolicyError)).toEqual(['policies/shop.yaml: document 1 (RateLimitPolicy/shop/rl): spec.rules[0].limit.requests: must be at least 1, got 0']);
  });

  it('confines a YAML syntax error to its document', () => {
    const result = parsePolicyText(`${allow('a')}---\nkind: [unclosed\n---\n${deny('c')}`, 'p.yaml');
    expect(result.documents.map((d) => d.key)).toEqual(['AuthorizationPolicy/shop/a', 'IPAccessPolicy/shop/c']);
    expect(result.errors.map(formatPolicyError)).toEqual([expect.stringMatching(/^p\.yaml: document 1: \(yaml\): line \d+, column \d+: /)]);
  });

  it('refuses duplicate mapping keys', () => {
    const lines = parsePolicyText(`${allow('a')}kind: Route\n`, 'p.yaml').errors.map(formatPolicyError);
    expect(lines).toEqual(['p.yaml: document 0: kind: line 6, column 1: Map keys must be unique ("kind" is also on line 2)']);
  });

  it('skips empty documents but keeps counting them', () => {
    const result = parsePolicyText(`---\n# nothing here\n---\n${allow('a')}---\n`, 'p.yaml');
    expect(result.errors).toEqual([]);
    expect(result.documents.map((d) => d.source.index)).toEqual([1]);
  });

  it('rejects the later copy of a key within a file', () => {
    const result = parsePolicyText(`${allow('a')}---\n${allow('a')}`, 'p.yaml');
    expect(result.documents).toHaveLength(1);
    expect(result.errors.map(formatPolicyError)).toEqual([
      'p.yaml: document 1 (AuthorizationPolicy/shop/a): metadata.name: duplicate: AuthorizationPolicy/shop/a is already defined in document 0 of this file; this copy is ignored',
    ]);
  });

  it('takes JSON (the admin API) as well as YAML', () => {
    const json = JSON.stringify({ apiVersion: 'meshgate.dev/v1', kind: 'IPAccessPolicy', metadata: { name: 'j', namespace: 'shop' }, spec: { deny: ['::1'] } });
    expect(parsePolicyText(json, 'api').documents[0]!.key).toBe('IPAccessPolicy/shop/j');
  });

  it('words every error on one line, even when the document quotes a line break (found by test/fuzz/policy.fuzz.test.ts)', () => {
    const text = `apiVersion: "\u2028"\nkind: AuthorizationPolicy\nmetadata: { name: a, namespace: shop }\nspec: { rules: [{ "to\\nx": 1 }] }\n`;
    const lines = parsePolicyText(text, 'p.yaml').errors.map(formatPolicyError);
    expect(lines).toEqual([
      'p.yaml: document 0 (AuthorizationPolicy/shop/a): apiVersion: expected meshgate.dev/v1, got "\\u2028"',
      'p.yaml: document 0 (AuthorizationPolicy/shop/a): spec.rules[0]["to\\nx"]: unknown field',
    ]);
  });

  it('keeps an error line short when the document has a very long kind (found by test/fuzz/policy.fuzz.test.ts)', () => {
    const lines = parsePolicyText(`apiVersion: meshgate.dev/v1\nkind: ${'K'.repeat(8000)}\nmetadata: { name: a, namespace: shop }\nspec: {}\n`, 'p.yaml').errors.map(formatPolicyError);
    expect(lines).toEqual([expect.stringMatching(/^p\.yaml: document 0: kind: expected one of AuthorizationPolicy, .*, got "K{59}$/)]);
  });

  it('refuses a file over maxFileBytes whole', () => {
    const result = parsePolicyText(`${allow('a')}# ${'x'.repeat(200)}\n`, 'p.yaml', { limits: { maxFileBytes: 100 } });
    expect(result.documents).toEqual([]);
    expect(result.errors.map(formatPolicyError)).toEqual([expect.stringMatching(/^p\.yaml: document 0: \(top level\): file too large: at most 100 bytes \(got \d+\); no document of it applies$/)]);
  });
});

describe('parsePolicyFiles', () => {
  it('rejects the later file’s copy of a key, naming both files, whatever the input order', () => {
    const files = [
      { file: 'b/second.yaml', text: allow('same') },
      { file: 'a/first.yaml', text: `${deny('other')}---\n${allow('same')}` },
    ];
    const result = parsePolicyFiles(files);
    expect(result.documents.map((d) => `${d.source.file}#${d.source.index} ${d.key}`)).toEqual(['a/first.yaml#0 IPAccessPolicy/shop/other', 'a/first.yaml#1 AuthorizationPolicy/shop/same']);
    expect(result.errors.map(formatPolicyError)).toEqual([
      'b/second.yaml: document 0 (AuthorizationPolicy/shop/same): metadata.name: duplicate: AuthorizationPolicy/shop/same is already defined in a/first.yaml (document 1); this copy is ignored',
    ]);
    expect(parsePolicyFiles([...files].reverse())).toEqual(result);
  });
});

describe('parsePolicyFolder', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-policies-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads *.yaml and *.yml recursively in sorted order, skipping dot entries (ConfigMap ..data)', async () => {
    await mkdir(path.join(dir, 'shop', 'nested'), { recursive: true });
    await mkdir(path.join(dir, '..2026_01_01_00_00_00.1'), { recursive: true });
    await writeFile(path.join(dir, 'shop', 'z.yml'), allow('z'));
    await writeFile(path.join(dir, 'shop', 'nested', 'a.yaml'), allow('n'));
    await writeFile(path.join(dir, 'a.YAML'), allow('top'));
    await writeFile(path.join(dir, 'notes.txt'), 'not policy');
    await writeFile(path.join(dir, '.swap.yaml'), allow('swap'));
    await writeFile(path.join(dir, '..2026_01_01_00_00_00.1', 'cm.yaml'), allow('cm'));
    await symlink('..2026_01_01_00_00_00.1', path.join(dir, '..data'));
    await symlink(path.join('..data', 'cm.yaml'), path.join(dir, 'cm.yaml'));

    expect(await listPolicyFiles(dir)).toEqual(['a.YAML', 'cm.yaml', 'shop/nested/a.yaml', 'shop/z.yml']);
    const result = await parsePolicyFolder(dir, { relativePaths: true });
    expect(result.errors).toEqual([]);
    expect(result.documents.map((d) => `${d.source.file} ${d.key}`)).toEqual([
      'a.YAML AuthorizationPolicy/shop/top',
      'cm.yaml AuthorizationPolicy/shop/cm',
      'shop/nested/a.yaml AuthorizationPolicy/shop/n',
      'shop/z.yml AuthorizationPolicy/shop/z',
    ]);
  });

  it('names files as dir/relative by default, and rejects duplicates across files', async () => {
    await writeFile(path.join(dir, '10-base.yaml'), allow('a'));
    await writeFile(path.join(dir, '20-team.yaml'), `${deny('b')}---\n${allow('a')}`);
    const result = await parsePolicyFolder(dir);
    expect(result.documents.map((d) => d.key)).toEqual(['AuthorizationPolicy/shop/a', 'IPAccessPolicy/shop/b']);
    expect(result.errors.map(formatPolicyError)).toEqual([
      `${path.join(dir, '20-team.yaml')}: document 1 (AuthorizationPolicy/shop/a): metadata.name: duplicate: AuthorizationPolicy/shop/a is already defined in ${path.join(dir, '10-base.yaml')} (document 0); this copy is ignored`,
    ]);
  });

  it('refuses an oversized file without reading it, and applies the others', async () => {
    await writeFile(path.join(dir, 'big.yaml'), `${allow('big')}# ${'x'.repeat(4096)}\n`);
    await writeFile(path.join(dir, 'ok.yaml'), allow('ok'));
    const result = await parsePolicyFolder(dir, { relativePaths: true, limits: { maxFileBytes: 1024 } });
    expect(result.documents.map((d) => d.key)).toEqual(['AuthorizationPolicy/shop/ok']);
    expect(result.errors.map(formatPolicyError)).toEqual([expect.stringMatching(/^big\.yaml: document 0: \(top level\): file too large: at most 1024 bytes/)]);
  });

  it('throws when the folder cannot be listed', async () => {
    await expect(parsePolicyFolder(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
