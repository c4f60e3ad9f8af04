import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalJson } from '../../../../src/policy/snapshot.ts';
import type { RegistryService } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import type { PolicySnapshotStore, ReceivedSnapshot } from '../../../../src/sidecar/policy/snapshot-store.ts';
import { createPolicySnapshotStore, snapshotFileFor } from '../../../../src/sidecar/policy/snapshot-store.ts';
import type { DocumentEnvelope, DocumentValidator } from '../../../../src/sidecar/policy/subscriber-validate.ts';
import { policyModelValidator } from '../../../../src/sidecar/policy/subscriber-validate.ts';
import { captureLogs } from '../../../helpers/log-capture.ts';
import { makeReadOnly, mountTinyDisk, unwritableSupport } from '../../../helpers/unwritable.ts';

const support = await unwritableSupport();

function capturingLogger() {
  return captureLogs({ level: 'debug' });
}

const model = createPolicyValidator();

/** A document as the server sends it: validated (defaults filled in), canonical JSON, its digest. Invalid ones go as written. */
function doc(kind: string, name: string, spec: Record<string, unknown>, overrides: Record<string, unknown> = {}): DocumentEnvelope {
  const raw = { apiVersion: 'meshgate.dev/v1', kind, metadata: { name, namespace: 'shop' }, spec, ...overrides };
  const checked = model.validate(raw, { file: 'test', index: 0 });
  const json = canonicalJson(checked.ok ? checked.document.document : raw);
  return { kind, namespace: 'shop', name, json, digest: createHash('sha256').update(json).digest('hex') };
}

const authz = (name: string, action: 'ALLOW' | 'DENY' = 'ALLOW', overrides: Record<string, unknown> = {}) => doc('AuthorizationPolicy', name, { action }, overrides);
const ipDeny = (name: string, cidr: string) => doc('IPAccessPolicy', name, { deny: [cidr] });
const route = (name: string, service = 'orders') => doc('Route', name, { service });

const orders: RegistryService = {
  name: 'orders',
  namespace: 'shop',
  endpoints: [{ address: '10.0.0.7:15006', labels: { version: 'v1' }, weight: 1 }],
  identities: ['spiffe://cluster.local/ns/shop/sa/orders'],
  external: false,
};

function snapshot(version: string, documents: DocumentEnvelope[], services: RegistryService[] = [orders]): ReceivedSnapshot {
  return { version, documents, services };
}

const keys = (docs: readonly { key: string }[]): string[] => docs.map((d) => d.key);

describe('policy snapshot store', () => {
  let dir: string;
  let file: string;
  const opened: PolicySnapshotStore[] = [];
  // Every store of a test, so its background writes end before the folder goes.
  const createStore = (opts: Parameters<typeof createPolicySnapshotStore>[0]): PolicySnapshotStore => {
    const store = createPolicySnapshotStore(opts);
    opened.push(store);
    return store;
  };
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-snap-'));
    file = snapshotFileFor(path.join(dir, 'state'), { service: 'frontend', namespace: 'shop' });
  });
  afterEach(async () => {
    for (const store of opened) store.close();
    await Promise.all(opened.splice(0).map((store) => store.flush()));
    await rm(dir, { recursive: true, force: true });
  });

  it('names one file per workload inside stateDir', () => {
    expect(file).toBe(path.join(dir, 'state', 'policy-snapshot.shop.frontend.json'));
  });

  it('persists atomically: a fresh store loads what the last one applied, and no temp file is left', async () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    expect(await store.load()).toBeUndefined();
    store.apply(snapshot('v1', [authz('allow-frontend')]), 1_000);
    const second = store.apply(snapshot('v2', [authz('allow-frontend', 'DENY'), ipDeny('block', '10.0.0.0/8')]), 2_000);
    await store.flush();
    expect(store.stats()).toMatchObject({ writeFailures: 0 });
    expect(await readdir(path.dirname(file))).toEqual([path.basename(file)]);

    const persisted = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    expect(persisted).toMatchObject({ format: 1, version: 'v2', receivedAt: new Date(2_000).toISOString(), services: [orders] });

    const reloaded = createStore({ file, logger });
    const loaded = await reloaded.load();
    expect(loaded).toEqual(second.snapshot);
    expect(reloaded.current()).toEqual(second.snapshot);
    expect(loaded!.documents.map((d) => d.document.spec)).toEqual([
      { action: 'DENY', mode: 'enforce', rules: [], selector: {} },
      { deny: ['10.0.0.0/8'], selector: {} },
    ]);
  });

  it('ignores a corrupt or foreign file with a logged error, never throwing', async () => {
    await mkdir(path.dirname(file), { recursive: true });
    for (const text of ['{"format":1,"version":"v1","receivedAt":"2026-', '[]', '{"format":99}', JSON.stringify({ format: 1, version: 'v1', receivedAt: 'x', documents: [], services: [] }), '']) {
      await writeFile(file, text);
      const { logger, lines } = capturingLogger();
      const store = createStore({ file, logger });
      await expect(store.load()).resolves.toBeUndefined();
      expect(store.current()).toBeUndefined();
      expect(lines.some((l) => l.level === 50 && String(l.msg).includes('corrupt'))).toBe(true);
    }
  });

  it('drops a persisted document that no longer validates and keeps the rest', async () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    store.apply(snapshot('v1', [authz('a'), route('r')]), 1_000);
    await store.flush();
    const modelCheck = policyModelValidator();
    const stricter: DocumentValidator = (raw) => {
      const r = modelCheck(raw);
      return r.ok && r.document.kind === 'Route' ? { ok: false, errors: [{ field: 'spec.routes', reason: 'required' }] } : r;
    };
    const capture = capturingLogger();
    const loaded = await createStore({ file, logger: capture.logger, validate: stricter }).load();
    expect(keys(loaded!.documents)).toEqual(['AuthorizationPolicy/shop/a']);
    expect(capture.lines.some((l) => l.document === 'Route/shop/r' && l.level === 50)).toBe(true);
  });

  it('one bad document keeps its last good copy, the others apply, and the NACK lists it with field and reason', async () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    const goodA = authz('a', 'DENY');
    const first = store.apply(snapshot('v1', [goodA, ipDeny('b', '10.0.0.0/8'), route('gone')]), 1_000);
    expect(first.ack).toEqual({ version: 'v1', accepted: true, errors: [] });

    const badA = doc('AuthorizationPolicy', 'a', { action: 'PERMIT' });
    const second = store.apply(snapshot('v2', [badA, ipDeny('b', '192.168.0.0/16'), route('c')]), 2_000);
    expect(second.ack).toEqual({
      version: 'v2',
      accepted: false,
      errors: [{ document: 'AuthorizationPolicy/shop/a', field: 'spec.action', reason: 'expected one of ALLOW, DENY, AUDIT, got "PERMIT"' }],
    });
    expect(second.changed).toBe(true);
    expect(keys(second.snapshot.documents)).toEqual(['AuthorizationPolicy/shop/a', 'IPAccessPolicy/shop/b', 'Route/shop/c']);
    expect(second.snapshot.documents[0]!.envelope).toEqual(goodA);
    expect(second.snapshot.documents[0]!.document.spec).toMatchObject({ action: 'DENY' });
    expect(second.snapshot.documents[1]!.document.spec).toMatchObject({ deny: ['192.168.0.0/16'] });
    expect(second.snapshot.refused).toEqual([{ key: 'AuthorizationPolicy/shop/a', kept: true }]);
    expect(second.snapshot.version).toBe('v2');

    // Still refused in the next version: the same old copy carries on, and survives a restart.
    const third = store.apply(snapshot('v3', [badA, ipDeny('b', '172.16.0.0/12')]), 3_000);
    expect(third.snapshot.documents[0]!.envelope).toEqual(goodA);
    await store.flush();
    const reloaded = await createStore({ file, logger }).load();
    expect(reloaded!.documents[0]!.envelope).toEqual(goodA);
    expect(reloaded!.refused).toEqual([{ key: 'AuthorizationPolicy/shop/a', kept: true }]);
  });

  it('a refused document with no previous copy is left out and reported as not kept', () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    const result = store.apply(snapshot('v1', [doc('Firewall', 'x', {}), route('r')]), 1_000);
    expect(result.ack.accepted).toBe(false);
    expect(result.ack.errors).toEqual([{ document: 'Firewall/shop/x', field: 'kind', reason: expect.stringContaining('got "Firewall"') }]);
    expect(keys(result.snapshot.documents)).toEqual(['Route/shop/r']);
    expect(result.snapshot.refused).toEqual([{ key: 'Firewall/shop/x', kept: false }]);
  });

  it('refuses JSON that does not parse, an envelope that disagrees with its document, and a key sent twice', () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    const broken = { ...route('broken'), json: '{"apiVersion":' };
    const renamed = { ...route('real'), name: 'claimed' };
    const result = store.apply(snapshot('v1', [broken, renamed, route('twice'), route('twice', 'payments')]), 1_000);
    expect(result.ack.errors).toEqual([
      { document: 'Route/shop/broken', field: '', reason: expect.stringContaining('not JSON') },
      { document: 'Route/shop/claimed', field: 'metadata.name', reason: 'document says real, envelope says claimed' },
      { document: 'Route/shop/twice', field: '', reason: expect.stringContaining('sent twice') },
    ]);
    expect(keys(result.snapshot.documents)).toEqual(['Route/shop/twice']);
    expect(result.snapshot.documents[0]!.document.spec).toMatchObject({ service: 'orders' });
  });

  it('a validator that throws refuses that one document', () => {
    const { logger } = capturingLogger();
    const modelCheck = policyModelValidator();
    const validate: DocumentValidator = (raw) => {
      if ((raw as { metadata: { name: string } }).metadata.name === 'boom') throw new Error('bug');
      return modelCheck(raw);
    };
    const store = createStore({ file, logger, validate });
    const result = store.apply(snapshot('v1', [route('boom'), route('fine')]), 1_000);
    expect(result.ack.errors).toEqual([{ document: 'Route/shop/boom', field: '', reason: 'validator failed: bug' }]);
    expect(keys(result.snapshot.documents)).toEqual(['Route/shop/fine']);
  });

  it('documents the server no longer sends are removed; an identical snapshot is not a change', () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    store.apply(snapshot('v1', [route('a'), route('b')]), 1_000);
    const second = store.apply(snapshot('v2', [route('b')]), 2_000);
    expect(keys(second.snapshot.documents)).toEqual(['Route/shop/b']);
    const again = store.apply(snapshot('v2', [route('b')]), 3_000);
    expect(again.changed).toBe(false);
    expect(again.snapshot.receivedAt).toBe(3_000);
  });

  it('a failed write is logged, counted and shown in persistence(); the snapshot still applies in memory; a retry recovers', async () => {
    const { logger, lines } = capturingLogger();
    const blocker = path.join(dir, 'not-a-dir');
    await writeFile(blocker, 'x');
    const outcomes: boolean[] = [];
    const store = createStore({ file: path.join(blocker, 'state', 'snap.json'), logger, retryMs: 20, now: () => 5_000, onWrite: (ok) => outcomes.push(ok) });
    const result = store.apply(snapshot('v1', [route('a')]), 1_000);
    await store.flush();
    expect(result.ack.accepted).toBe(true);
    expect(store.current()?.version).toBe('v1');
    expect(store.stats()).toMatchObject({ writes: 0, writeFailures: 1, lastWriteError: expect.stringContaining('ENOTDIR') });
    expect(store.persistence()).toEqual({
      file: path.join(blocker, 'state', 'snap.json'),
      state: 'failing',
      persistedVersion: undefined,
      diskCopy: 'none',
      failures: 1,
      lastError: expect.stringContaining('ENOTDIR'),
      failingSince: 5_000,
      refusedAtBoot: undefined,
    });
    expect(lines.filter((l) => l.level === 50 && String(l.msg).includes('cannot persist'))).toHaveLength(1);

    // The disk comes back: the retry writes what is in force, with no new snapshot needed.
    await rm(blocker);
    await expect.poll(() => store.persistence().state, { timeout: 3_000 }).toBe('ok');
    await store.flush();
    expect(store.persistence()).toMatchObject({ persistedVersion: 'v1', diskCopy: 'current', failures: expect.any(Number) });
    expect(outcomes[0]).toBe(false);
    expect(outcomes.at(-1)).toBe(true);
    expect((JSON.parse(await readFile(path.join(blocker, 'state', 'snap.json'), 'utf8')) as { version: string }).version).toBe('v1');
  });

  it.skipIf(support.tinyDisk)('on a full disk the older copy is set aside, so a restart refuses it instead of enforcing it; a later write clears that', async () => {
    const state = path.dirname(file);
    await mkdir(state, { recursive: true });
    const unmount = await mountTinyDisk(state, 65_536);
    if (typeof unmount === 'string') throw new Error(unmount);
    try {
      const { logger } = capturingLogger();
      const store = createStore({ file, logger, retryMs: 60_000 });
      store.apply(snapshot('v1', [authz('allow-frontend')]), 1_000);
      await store.flush();
      expect(store.persistence()).toMatchObject({ state: 'ok', persistedVersion: 'v1', diskCopy: 'current' });
      // Fill the disk: the next version cannot be written.
      await writeFile(path.join(state, 'filler'), Buffer.alloc(65_536)).catch(() => undefined);
      store.apply(snapshot('v2', [authz('allow-frontend', 'DENY')]), 2_000);
      await store.flush();
      expect(store.current()?.version).toBe('v2');
      expect(store.persistence()).toMatchObject({ state: 'failing', persistedVersion: 'v1', diskCopy: 'outdated-set-aside', lastError: expect.stringContaining('ENOSPC') });
      expect((await readdir(state)).sort()).toEqual(['filler', `${path.basename(file)}.outdated`]);

      // A restart, the disk still full or freed: the v1 copy is not trusted.
      for (const freed of [false, true]) {
        if (freed) await rm(path.join(state, 'filler'));
        const restarted = createStore({ file, logger });
        expect(await restarted.load()).toBeUndefined();
        expect(restarted.current()).toBeUndefined();
        expect(restarted.persistence().refusedAtBoot).toEqual({ version: 'v1', reason: 'the persisted copy was set aside as outdated: a newer policy could not be written before the restart' });
      }
      // Once a snapshot is written again, the set-aside copy is gone and the next restart trusts the file.
      const again = createStore({ file, logger });
      again.apply(snapshot('v3', [authz('allow-frontend', 'DENY')]), 3_000);
      await again.flush();
      expect(await readdir(state)).toEqual([path.basename(file)]);
      expect((await createStore({ file, logger }).load())?.version).toBe('v3');
    } finally {
      for (const store of opened) store.close();
      await Promise.all(opened.map((store) => store.flush()));
      await unmount();
    }
  });

  it.skipIf(support.readOnly)('a restart in a stateDir that takes no write refuses the copy there: a newer one may have been lost', async () => {
    const { logger, lines } = capturingLogger();
    const store = createStore({ file, logger });
    store.apply(snapshot('v1', [authz('allow-frontend')]), 1_000);
    await store.flush();
    const undo = await makeReadOnly(path.dirname(file));
    if (typeof undo === 'string') throw new Error(undo);
    try {
      const outcomes: boolean[] = [];
      const restarted = createStore({ file, logger, now: () => 9_000, onWrite: (ok) => outcomes.push(ok) });
      expect(await restarted.load()).toBeUndefined();
      expect(restarted.current()).toBeUndefined();
      expect(restarted.persistence()).toMatchObject({
        state: 'failing',
        failingSince: 9_000,
        refusedAtBoot: { version: 'v1', reason: expect.stringMatching(/^stateDir takes no write \(.*\): a newer policy may have failed to persist before the restart$/) },
      });
      expect(outcomes).toEqual([false]);
      expect(lines.some((l) => l.msg === 'not trusting the persisted policy snapshot: admitting nothing until a policy server answers')).toBe(true);
      // A snapshot from a server applies in memory all the same.
      restarted.apply(snapshot('v2', [authz('allow-frontend', 'DENY')]), 10_000);
      expect(restarted.current()?.version).toBe('v2');
    } finally {
      await undo();
    }
  });

  it('a restart refuses an unreadable or corrupt copy, and a copy set aside as outdated', async () => {
    const { logger } = capturingLogger();
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, '{"format":1,"version":"v1",');
    const corrupt = createStore({ file, logger });
    expect(await corrupt.load()).toBeUndefined();
    expect(corrupt.persistence().refusedAtBoot).toEqual({ version: undefined, reason: `${file} is corrupt` });

    await rm(file);
    await mkdir(file);
    const unreadable = createStore({ file, logger });
    expect(await unreadable.load()).toBeUndefined();
    expect(unreadable.persistence().refusedAtBoot).toEqual({ version: undefined, reason: `cannot read ${file} (EISDIR)` });
    await rm(file, { recursive: true });

    const writer = createStore({ file, logger });
    writer.apply(snapshot('v7', [route('a')]), 1_000);
    await writer.flush();
    await rename(file, `${file}.outdated`);
    const restarted = createStore({ file, logger });
    expect(await restarted.load()).toBeUndefined();
    expect(restarted.persistence().refusedAtBoot?.version).toBe('v7');
    // Nothing persisted at all is not a refusal: onNoPolicy decides.
    await rm(`${file}.outdated`);
    const fresh = createStore({ file, logger });
    expect(await fresh.load()).toBeUndefined();
    expect(fresh.persistence().refusedAtBoot).toBeUndefined();
  });

  it('coalesces writes: the newest state is what ends up on disk', async () => {
    const { logger } = capturingLogger();
    const store = createStore({ file, logger });
    for (let i = 1; i <= 20; i++) store.apply(snapshot(`v${i}`, [route('a', `svc-${i}`)]), i);
    await store.flush();
    expect(store.stats().writes).toBeLessThan(20);
    const persisted = JSON.parse(await readFile(file, 'utf8')) as { version: string };
    expect(persisted.version).toBe('v20');
  });
});
