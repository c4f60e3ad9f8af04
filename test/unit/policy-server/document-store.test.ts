import { mkdtemp, readFile, readdir, rm, unlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseAllDocuments } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDocumentStore } from '../../../src/policy-server/document-store.ts';
import type { FolderDocumentStore, PolicyModel } from '../../../src/policy-server/document-store.ts';
import { createPolicyServerMetrics } from '../../../src/policy-server/policy-server-metrics.ts';
import type { PolicyDocument, PolicyError } from '../../../src/policy/types.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
import { digestOf, fakeValidate } from '../../helpers/policy-fakes.ts';

/** The store's seam to the policy model, filled with the fakes' envelope validation. */
const model: PolicyModel = {
  parseFile(text, file) {
    const documents: Array<{ index: number; document: PolicyDocument; digest: string }> = [];
    const errors: PolicyError[] = [];
    parseAllDocuments(text).forEach((doc, index) => {
      if (doc.errors.length > 0) {
        errors.push({ source: { file, index }, document: undefined, field: '(yaml)', reason: doc.errors[0]!.message.split('\n')[0]! });
        return;
      }
      const result = fakeValidate(doc.toJS(), file, index);
      if ('document' in result) documents.push({ index, document: result.document, digest: digestOf(result.document) });
      else errors.push(...result.errors);
    });
    return { documents, errors };
  },
  maxFileBytes: 4096,
};

const policy = (namespace: string, name: string, extra = ''): string =>
  `apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n  rules: []\n${extra}`;

describe('folder document store', () => {
  let dir: string;
  let store: FolderDocumentStore;
  let logs: Array<Record<string, unknown>>;
  let metrics: ReturnType<typeof createPolicyServerMetrics>;

  const open = async (pollMs = 0): Promise<FolderDocumentStore> => {
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    store = await openDocumentStore({ folder: dir, debounceMs: 10, pollMs }, model, { logger: createLogger({ level: 'info', name: 't', destination: sink }), metrics });
    return store;
  };
  const changed = (): Promise<void> => new Promise((resolve) => store.onChange(resolve));
  const keys = (): string[] => store.documents().map((d) => d.key).sort();

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-store-'));
    logs = [];
    metrics = createPolicyServerMetrics({ defaultMetrics: false });
  });
  afterEach(async () => {
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('loads every yaml file at any depth, ignoring dot names and other extensions', async () => {
    await mkdir(path.join(dir, 'shop', 'deep'), { recursive: true });
    await mkdir(path.join(dir, '.registry'));
    await writeFile(path.join(dir, 'shop', 'a.yaml'), policy('shop', 'a'));
    await writeFile(path.join(dir, 'shop', 'deep', 'b.yml'), policy('shop', 'b'));
    await writeFile(path.join(dir, 'c.YAML'), JSON.stringify({ apiVersion: 'meshgate.dev/v1', kind: 'AuthorizationPolicy', metadata: { name: 'c', namespace: 'web' }, spec: {} }));
    await writeFile(path.join(dir, 'd.json'), JSON.stringify({ apiVersion: 'meshgate.dev/v1', kind: 'AuthorizationPolicy', metadata: { name: 'd', namespace: 'web' }, spec: {} }));
    await writeFile(path.join(dir, '.hidden.yaml'), policy('shop', 'hidden'));
    await writeFile(path.join(dir, '.registry', 'x.yaml'), policy('shop', 'x'));
    await writeFile(path.join(dir, 'notes.txt'), 'not a policy');
    await open();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/a', 'AuthorizationPolicy/shop/b', 'AuthorizationPolicy/web/c']);
    expect(store.documents().find((d) => d.key.endsWith('/b'))!.file).toBe('shop/deep/b.yml');
    expect(store.errors()).toEqual([]);
  });

  it('rejects an invalid document alone, with file, index, field and reason; the rest of its file applies', async () => {
    await writeFile(path.join(dir, 'mixed.yaml'), `${policy('shop', 'good')}---\n${policy('shop', 'Bad_Name')}---\n${policy('shop', 'also-good')}`);
    await open();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/also-good', 'AuthorizationPolicy/shop/good']);
    expect(store.errors()).toEqual([{ source: { file: 'mixed.yaml', index: 1 }, document: 'AuthorizationPolicy/shop/Bad_Name', field: 'metadata.name', reason: 'expected a DNS label' }]);
    expect((await metrics.documents.get()).values.map((v) => [v.labels.state, v.value]).sort()).toEqual([['invalid', 1], ['valid', 2]]);
    const warn = logs.find((l) => l.msg === 'policy document rejected: mixed.yaml: document 1 (AuthorizationPolicy/shop/Bad_Name): metadata.name: expected a DNS label');
    expect(warn).toMatchObject({ level: 40, file: 'mixed.yaml', document: 1, field: 'metadata.name' });
  });

  it('keeps the last valid copy of a document that turns invalid, and drops it when its file goes', async () => {
    await writeFile(path.join(dir, 'p.yaml'), policy('shop', 'p', '  mode: enforce\n'));
    await writeFile(path.join(dir, 'q.yaml'), policy('shop', 'q'));
    await open();
    const before = store.documents().find((d) => d.key === 'AuthorizationPolicy/shop/p')!;
    let next = changed();
    await writeFile(path.join(dir, 'p.yaml'), policy('shop', 'p', '  rules: 3\n').replace('  rules: []\n', ''));
    await store.rescan();
    await next;
    expect(store.errors()).toEqual([{ source: { file: 'p.yaml', index: 0 }, document: 'AuthorizationPolicy/shop/p', field: 'spec.rules', reason: 'expected an array' }]);
    expect(store.documents().find((d) => d.key === 'AuthorizationPolicy/shop/p')).toEqual(before);
    expect(store.stale()).toEqual(['AuthorizationPolicy/shop/p']);

    // A file that no longer parses as YAML keeps its documents too.
    await writeFile(path.join(dir, 'q.yaml'), 'apiVersion: [unclosed\n');
    await store.rescan();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/p', 'AuthorizationPolicy/shop/q']);
    expect(store.stale()).toEqual(['AuthorizationPolicy/shop/p', 'AuthorizationPolicy/shop/q']);

    next = changed();
    await unlink(path.join(dir, 'p.yaml'));
    await store.rescan();
    await next;
    expect(keys()).toEqual(['AuthorizationPolicy/shop/q']);
  });

  it('reports the second copy of a key as an error, the first file in path order wins', async () => {
    await writeFile(path.join(dir, 'a.yaml'), policy('shop', 'same', '  mode: enforce\n'));
    await writeFile(path.join(dir, 'b.yaml'), policy('shop', 'same', '  mode: shadow\n'));
    await open();
    expect(store.documents()).toHaveLength(1);
    expect(store.documents()[0]!.file).toBe('a.yaml');
    expect(store.errors()).toEqual([{ source: { file: 'b.yaml', index: 0 }, document: 'AuthorizationPolicy/shop/same', field: 'metadata.name', reason: 'duplicate: AuthorizationPolicy/shop/same is already defined in a.yaml (document 0); this copy is ignored' }]);
  });

  it('rejects a file over maxFileBytes as a whole', async () => {
    await writeFile(path.join(dir, 'big.yaml'), `${policy('shop', 'big')}# ${'x'.repeat(5000)}\n`);
    await open();
    expect(store.documents()).toEqual([]);
    expect(store.errors()[0]).toMatchObject({ source: { file: 'big.yaml', index: 0 }, field: '(top level)', reason: `file too large: at most 4096 bytes (got ${5000 + policy('shop', 'big').length + 3}); no document of it applies` });
  });

  it('put validates, then writes <namespace>/<kind>-<name>.yaml atomically; the state is current when it resolves', async () => {
    await open();
    const bad = await store.put(policy('shop', 'Nope'));
    expect(bad).toEqual({ ok: false, errors: [{ source: { file: 'api', index: 0 }, document: 'AuthorizationPolicy/shop/Nope', field: 'metadata.name', reason: 'expected a DNS label' }] });
    expect(await readdir(dir)).toEqual([]);
    const two = await store.put(`${policy('shop', 'a')}---\n${policy('shop', 'b')}`);
    expect(two).toMatchObject({ ok: false, errors: [{ reason: 'expected exactly one document, got 2' }] });

    const text = policy('shop', 'allow-frontend');
    const ok = await store.put(text);
    expect(ok).toEqual({ ok: true, key: 'AuthorizationPolicy/shop/allow-frontend', digest: expect.stringMatching(/^[0-9a-f]{64}$/), file: 'shop/authorizationpolicy-allow-frontend.yaml' });
    expect(await readFile(path.join(dir, 'shop', 'authorizationpolicy-allow-frontend.yaml'), 'utf8')).toBe(text);
    expect(keys()).toEqual(['AuthorizationPolicy/shop/allow-frontend']);
    expect((await readdir(path.join(dir, 'shop'))).filter((n) => n.startsWith('.'))).toEqual([]);

    expect(await store.remove('AuthorizationPolicy/shop/allow-frontend')).toBe(true);
    expect(keys()).toEqual([]);
    expect(await readdir(path.join(dir, 'shop'))).toEqual([]);
    expect(await store.remove('AuthorizationPolicy/shop/allow-frontend')).toBe(false);
  });

  it('put and remove of a document in a hand-written multi-document file touch only that document', async () => {
    await writeFile(path.join(dir, 'all.yaml'), `# team policies\n${policy('shop', 'one')}---\n${policy('shop', 'two')}`);
    await open();
    const r = await store.put(policy('shop', 'two', '  mode: shadow\n'));
    expect(r).toMatchObject({ ok: true, file: 'all.yaml' });
    expect(store.documents().find((d) => d.key.endsWith('/two'))!.document.spec.mode).toBe('shadow');
    expect(await readFile(path.join(dir, 'all.yaml'), 'utf8')).toContain('# team policies');
    expect(await store.remove('AuthorizationPolicy/shop/one')).toBe(true);
    expect(keys()).toEqual(['AuthorizationPolicy/shop/two']);
    expect(await readdir(dir)).toEqual(['all.yaml']);
  });

  it('sees changes made behind its back through file events alone', async () => {
    await open(0);
    const next = changed();
    const started = performance.now();
    await writeFile(path.join(dir, 'new.yaml'), policy('shop', 'new'));
    await next;
    expect(performance.now() - started).toBeLessThan(1000);
    expect(keys()).toEqual(['AuthorizationPolicy/shop/new']);
  });

  it('keeps its documents when the folder disappears, and counts it', async () => {
    await writeFile(path.join(dir, 'a.yaml'), policy('shop', 'a'));
    await open();
    await rm(dir, { recursive: true });
    await store.rescan();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/a']);
    expect((await metrics.folderErrors.get()).values[0]!.value).toBe(1);
    expect(logs.some((l) => l.msg === 'cannot read the policy folder; keeping the current documents')).toBe(true);
    await mkdir(dir);
  });
});
