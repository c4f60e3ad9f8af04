import { mkdir, mkdtemp, open as openFile, readdir, readFile, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { PolicyDocument, PolicyError } from '../../../src/policy/types.ts';
import type { FolderDocumentStore, PolicyModel } from '../../../src/policy-server/document-store.ts';
import { openDocumentStore } from '../../../src/policy-server/document-store.ts';
import { createPolicyServerMetrics } from '../../../src/policy-server/policy-server-metrics.ts';
import { captureLogs } from '../../helpers/log-capture.ts';
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

  const open = async (pollMs = 0, settleMs = 0): Promise<FolderDocumentStore> => {
    store = await openDocumentStore({ folder: dir, debounceMs: 10, pollMs, settleMs }, model, { logger: captureLogs({ name: 't', into: logs }).logger, metrics });
    return store;
  };
  const changed = (): Promise<void> => new Promise((resolve) => store.onChange(resolve));
  const keys = (): string[] =>
    store
      .documents()
      .map((d) => d.key)
      .sort();

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
    expect((await metrics.documents.get()).values.map((v) => [v.labels.state, v.value]).sort()).toEqual([
      ['invalid', 1],
      ['valid', 2],
    ]);
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

  it('reports the second copy of a key as an error; at the first load the copy in the least recently modified file serves', async () => {
    await writeFile(path.join(dir, 'a.yaml'), policy('shop', 'same', '  mode: enforce\n'));
    await writeFile(path.join(dir, 'b.yaml'), policy('shop', 'same', '  mode: shadow\n'));
    await utimes(path.join(dir, 'a.yaml'), new Date(2_000_000_000_000), new Date(2_000_000_000_000));
    await utimes(path.join(dir, 'b.yaml'), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    await open();
    expect(store.documents().map((d) => [d.file, d.document.spec.mode])).toEqual([['b.yaml', 'shadow']]);
    expect(store.errors()).toEqual([
      {
        source: { file: 'a.yaml', index: 0 },
        document: 'AuthorizationPolicy/shop/same',
        field: 'metadata.name',
        reason: 'duplicate: AuthorizationPolicy/shop/same is already served from b.yaml (document 0); this copy is ignored',
      },
    ]);
  });

  it('a copy of a serving document added in a file that sorts earlier is the one refused, named by its file; a restart keeps it so', async () => {
    const orders = path.join(dir, '08-orders.yaml');
    const x = path.join(dir, '07b-x.yaml');
    await writeFile(orders, `${policy('shop', 'keep')}---\n${policy('shop', 'orders', '  mode: enforce\n')}`);
    await open();
    await writeFile(x, policy('shop', 'orders', '  mode: shadow\n'));
    await store.rescan();
    const serving = (): unknown[] =>
      store
        .documents()
        .filter((d) => d.key === 'AuthorizationPolicy/shop/orders')
        .map((d) => [d.file, d.document.spec.mode]);
    expect(serving()).toEqual([['08-orders.yaml', 'enforce']]);
    const refused = {
      source: { file: '07b-x.yaml', index: 0 },
      document: 'AuthorizationPolicy/shop/orders',
      field: 'metadata.name',
      reason: 'duplicate: AuthorizationPolicy/shop/orders is already served from 08-orders.yaml (document 1); this copy is ignored',
    };
    expect(store.errors()).toEqual([refused]);
    expect(logs.filter((l) => String(l.msg).startsWith('policy document rejected: 07b-x.yaml'))).toHaveLength(1);

    // The serving file breaks: its last valid copy stays, the duplicate still does not take over.
    await writeFile(orders, 'apiVersion: [unclosed\n');
    await store.rescan();
    expect(serving()).toEqual([['08-orders.yaml', 'enforce']]);
    await writeFile(orders, `${policy('shop', 'keep')}---\n${policy('shop', 'orders', '  mode: enforce\n')}`);
    await store.rescan();
    // An edit through the API lands in the serving file.
    expect(await store.put(policy('shop', 'orders', '  mode: enforce\n  rules: []\n'.replace('  rules: []\n', '')))).toMatchObject({ ok: true, file: '08-orders.yaml' });

    // A restart: the copy in the file modified first serves (the serving one, unless it was edited after the copy came).
    await store.close();
    await utimes(orders, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    await open();
    expect(serving()).toEqual([['08-orders.yaml', 'enforce']]);
    expect(store.errors()).toEqual([refused]);

    // Only when the serving copy goes does the other one serve.
    await unlink(orders);
    await store.rescan();
    expect(serving()).toEqual([['07b-x.yaml', 'shadow']]);
    expect(store.errors()).toEqual([]);
  });

  it('a file truncated to be rewritten keeps serving what it served until it is whole again; deleted, its documents leave', async () => {
    const file = path.join(dir, 'deny.yaml');
    await writeFile(file, `${policy('shop', 'one')}---\n${policy('shop', 'two')}`);
    await open();
    // Every state a writer leaves the file in while rewriting it in place, settle off: the rule alone holds.
    const full = `${policy('shop', 'one', '  mode: shadow\n')}---\n${policy('shop', 'two', '  mode: shadow\n')}`;
    for (const partial of ['', '\n', '# rewritten by config management\n', full.slice(0, 20), full.slice(0, full.indexOf('---') + 4), full.slice(0, full.length - 30)]) {
      await writeFile(file, partial);
      await store.rescan();
      expect(keys(), JSON.stringify(partial)).toEqual(['AuthorizationPolicy/shop/one', 'AuthorizationPolicy/shop/two']);
    }
    await writeFile(file, '');
    await store.rescan();
    expect(store.stale()).toEqual(['AuthorizationPolicy/shop/one', 'AuthorizationPolicy/shop/two']);
    expect(store.errors()).toEqual([
      {
        source: { file: 'deny.yaml', index: 0 },
        document: undefined,
        field: '(top level)',
        reason: 'file has no document (empty, or being rewritten); the 2 document(s) it served stay in service until it is written whole again or deleted',
      },
    ]);
    expect(logs.some((l) => l.level === 40 && String(l.msg).includes('deny.yaml: document 0: (top level): file has no document'))).toBe(true);

    await writeFile(file, full);
    await store.rescan();
    expect(store.documents().map((d) => d.document.spec.mode)).toEqual(['shadow', 'shadow']);
    expect(store.errors()).toEqual([]);
    // A whole file without a document removes it.
    await writeFile(file, policy('shop', 'one'));
    await store.rescan();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/one']);
    await writeFile(file, '');
    await store.rescan();
    expect(keys()).toEqual(['AuthorizationPolicy/shop/one']);
    await unlink(file);
    await store.rescan();
    expect(keys()).toEqual([]);
  });

  it('with settleMs, a file written in place over time is never served half-written, nor a file deleted and written again', async () => {
    const file = path.join(dir, 'deny.yaml');
    const before = `${policy('shop', 'deny')}  action: DENY\n  selector: { services: [orders] }\n`;
    await writeFile(file, before);
    await open(0, 250);
    const seen: string[] = [];
    store.onChange(() => seen.push(JSON.stringify(store.documents().map((d) => d.document.spec))));
    // A whole document at each chunk boundary, each one a policy that denies less: the fail-open states.
    const after = `${policy('shop', 'deny')}  action: DENY\n  selector: { services: [orders] }\n  mode: enforce\n`;
    const handle = await openFile(file, 'r+');
    await handle.truncate(0);
    for (let at = 0; at < after.length; at += 24) {
      await handle.write(after.slice(at, at + 24), at);
      await new Promise((resolve) => setTimeout(resolve, 10)); // the slow writer's pace: the scenario, not a wait
    }
    await handle.close();
    await unlink(file);
    await new Promise((resolve) => setTimeout(resolve, 10)); // gone for a moment, then back: the scenario, not a wait
    await writeFile(file, after);
    await store.rescan();
    expect(seen).toEqual([JSON.stringify([{ rules: [], action: 'DENY', selector: { services: ['orders'] }, mode: 'enforce' }])]);
    expect(store.errors()).toEqual([]);
  });

  it('no entry stops the watcher: link loops and dangling links are errors reported once, a link to a folder is reported once, changes still apply', async () => {
    await mkdir(path.join(dir, 'sub'));
    await mkdir(path.join(dir, '..data'));
    await writeFile(path.join(dir, 'a.yaml'), policy('shop', 'a'));
    await writeFile(path.join(dir, '..data', 'real.yml'), policy('shop', 'linked'));
    await symlink('..data/real.yml', path.join(dir, 'linked.yaml'));
    await symlink('self.yaml', path.join(dir, 'self.yaml'));
    await symlink('nowhere.yaml', path.join(dir, 'dangling.yaml'));
    await symlink('..', path.join(dir, 'sub', 'up'));
    await open(0);
    // Events alone (pollFallback 0) still bring changes, however often the folder is scanned.
    for (const name of ['b', 'c']) {
      const next = changed();
      await writeFile(path.join(dir, `${name}.yaml`), policy('shop', name));
      await next;
    }
    await store.rescan();
    expect(keys()).toEqual(['a', 'b', 'c', 'linked'].map((n) => `AuthorizationPolicy/shop/${n}`));
    expect(store.errors().map((e) => `${e.source.file}: ${e.reason}`)).toEqual([
      'dangling.yaml: cannot read file (ENOENT: dangling symbolic link to nowhere.yaml)',
      'self.yaml: cannot read file (ELOOP: symbolic link loop)',
    ]);

    // A link whose target goes keeps what it served, as an unreadable file does; removing the link removes it.
    await rm(path.join(dir, '..data'), { recursive: true });
    await store.rescan();
    expect(store.stale()).toEqual(['AuthorizationPolicy/shop/linked']);
    const next = changed();
    await unlink(path.join(dir, 'linked.yaml'));
    await next;
    expect(keys()).toEqual(['a', 'b', 'c'].map((n) => `AuthorizationPolicy/shop/${n}`));

    const reported = (text: string): number => logs.filter((l) => String(l.msg).includes(text)).length;
    expect(reported('self.yaml: document 0: (top level): cannot read file (ELOOP')).toBe(1);
    expect(reported('dangling.yaml: document 0: (top level): cannot read file (ENOENT')).toBe(1);
    expect(reported('policy folder entry skipped: sub/up: symbolic link to a folder')).toBe(1);
    expect(logs.filter((l) => String(l.msg).includes('watch'))).toEqual([]);
  });

  it('rejects a file over maxFileBytes as a whole', async () => {
    await writeFile(path.join(dir, 'big.yaml'), `${policy('shop', 'big')}# ${'x'.repeat(5000)}\n`);
    await open();
    expect(store.documents()).toEqual([]);
    expect(store.errors()[0]).toMatchObject({
      source: { file: 'big.yaml', index: 0 },
      field: '(top level)',
      reason: `file too large: at most 4096 bytes (got ${5000 + policy('shop', 'big').length + 3}); no document of it applies`,
    });
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
    expect((await metrics.folderErrors.get()).values[0]!.value).toBeGreaterThanOrEqual(1); // the watcher may rescan (and count) too
    expect(logs.some((l) => l.msg === 'cannot read the policy folder; keeping the current documents')).toBe(true);
    await mkdir(dir);
  });
});
