import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PolicySubscriberConfigInput } from '../../../../src/config/policy-subscriber-schema.ts';
import { policySubscriberConfigSchema } from '../../../../src/config/policy-subscriber-schema.ts';
import { canonicalJson } from '../../../../src/policy/snapshot.ts';
import type { PolicySnapshotStore } from '../../../../src/sidecar/policy/snapshot-store.ts';
import { createPolicySnapshotStore } from '../../../../src/sidecar/policy/snapshot-store.ts';
import type { EffectiveSnapshot } from '../../../../src/sidecar/policy/subscriber.ts';
import { createPolicySubscriber } from '../../../../src/sidecar/policy/subscriber.ts';
import type { DocumentEnvelope } from '../../../../src/sidecar/policy/subscriber-validate.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { captureLogs } from '../../../helpers/log-capture.ts';

/*
 * The subscriber without a network: what it enforces and reports before any
 * server answers. The stream itself is covered by
 * test/integration/policy-subscriber.test.ts.
 */

function route(name: string): DocumentEnvelope {
  const json = canonicalJson({ apiVersion: 'meshgate.dev/v1', kind: 'Route', metadata: { name, namespace: 'shop' }, spec: { routes: [], selector: {}, service: 'orders' } });
  return { kind: 'Route', namespace: 'shop', name, json, digest: createHash('sha256').update(json).digest('hex') };
}

describe('policy subscriber before any server answers', () => {
  let dir: string;
  const stores: PolicySnapshotStore[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-sub-'));
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.flush()));
    await rm(dir, { recursive: true, force: true });
  });

  function setup(config: Partial<PolicySubscriberConfigInput> = {}, now = 10_000_000) {
    const { logger, lines } = captureLogs({ level: 'debug', name: 'sidecar' });
    const clock = createFakeClock(now);
    const store = createPolicySnapshotStore({ file: path.join(dir, 'snap.json'), logger });
    stores.push(store);
    const sub = createPolicySubscriber(policySubscriberConfigSchema.parse({ servers: ['127.0.0.1:1'], stateDir: dir, ...config }), {
      credentials: () => undefined,
      hello: { sidecarId: 'frontend-1', address: '', labels: {} },
      store,
      clock,
      random: () => 0,
      logger,
    });
    return { sub, store, clock, lines };
  }

  async function persist(version: string, receivedAt: number): Promise<void> {
    const { store } = setup();
    store.apply({ version, documents: [route('a')], services: [] }, receivedAt);
    await store.flush();
  }

  it('with nothing on disk: no policy; deny by default, allow only when configured', async () => {
    const denying = setup();
    await denying.sub.boot();
    expect(denying.sub.current()).toBeUndefined();
    expect(denying.sub.ready()).toEqual({ ok: false, state: 'no-policy', detail: expect.stringContaining('onNoPolicy: deny admits no call') });
    const allowing = setup({ onNoPolicy: 'allow' });
    await allowing.sub.boot();
    expect(allowing.sub.ready()).toEqual({ ok: true, state: 'no-policy', detail: expect.stringContaining('onNoPolicy: allow admits every call') });
  });

  it('boots from a recent disk copy: source disk, ok, listeners (even late ones) get it', async () => {
    await persist('v7', 10_000_000 - 60_000);
    const { sub } = setup();
    const early: EffectiveSnapshot[] = [];
    sub.onSnapshot((e) => early.push(e));
    const first = sub.first();
    await sub.boot();
    await sub.boot();
    await expect(first).resolves.toMatchObject({ version: 'v7', source: 'disk' });
    expect(early).toHaveLength(1);
    expect(early[0]!.documents.map((d) => d.metadata.name)).toEqual(['a']);
    const late: EffectiveSnapshot[] = [];
    sub.onSnapshot((e) => late.push(e));
    expect(late.map((e) => e.version)).toEqual(['v7']);
    expect(sub.current()).toEqual({
      version: 'v7',
      receivedAt: 10_000_000 - 60_000,
      source: 'disk',
      degraded: false,
      hasPolicy: true,
      connectedTo: undefined,
      serverId: undefined,
      refused: [],
    });
    expect(sub.ready()).toMatchObject({ ok: true, state: 'ok' });
  });

  it('boots from a store its owner loaded already', async () => {
    await persist('v3', 10_000_000);
    const { sub, store } = setup();
    await store.load();
    await sub.boot();
    expect(sub.current()).toMatchObject({ version: 'v3', source: 'disk' });
  });

  it('a disk copy older than maxStaleness is enforced but degraded, with one warning', async () => {
    await persist('v7', 10_000_000 - 10 * 60_000);
    const { sub, lines, clock } = setup({ maxStaleness: '5m' });
    await sub.boot();
    expect(sub.current()).toMatchObject({ version: 'v7', source: 'disk', degraded: true, hasPolicy: true });
    expect(sub.ready()).toEqual({ ok: true, state: 'degraded', detail: expect.stringContaining('enforcing policy version v7 (disk) not confirmed by a server for 600s') });
    clock.advance(1_000);
    sub.ready();
    expect(lines.filter((l) => l.level === 40 && String(l.msg).includes('stale'))).toHaveLength(1);
  });

  it('a listener that throws is logged and does not stop the others', async () => {
    await persist('v1', 10_000_000);
    const { sub, lines } = setup();
    const seen: string[] = [];
    sub.onSnapshot(() => {
      throw new Error('compile failed');
    });
    sub.onSnapshot((e) => seen.push(e.version));
    await sub.boot();
    expect(seen).toEqual(['v1']);
    expect(lines.some((l) => l.level === 50 && l.err === 'compile failed')).toBe(true);
  });

  it('run() returns when aborted and never throws, even with no certificate', async () => {
    const { sub } = setup({ reconnect: { base: '10ms', max: '20ms' } });
    const abort = new AbortController();
    const done = sub.run(abort.signal);
    await expect.poll(() => sub.stats().failures, { timeout: 5_000 }).toBeGreaterThan(0);
    abort.abort();
    await expect(done).resolves.toBeUndefined();
    expect(sub.stats()).toMatchObject({ lastError: 'no workload certificate yet' });
    expect(sub.stats().failures).toBeGreaterThan(0);
  });
});
