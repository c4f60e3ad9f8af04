import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPolicyServerMetrics } from '../../../src/policy-server/policy-server-metrics.ts';
import { createRegistryShare } from '../../../src/policy-server/registry-share.ts';
import type { RegisteredEndpoint } from '../../../src/policy-server/service-registry.ts';
import { createServiceRegistry } from '../../../src/policy-server/service-registry.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
import { captureLogs } from '../../helpers/log-capture.ts';

const ep = (address: string, serverId: string): RegisteredEndpoint => ({
  streamId: `${serverId}#1`,
  sidecarId: `sc-${address}`,
  spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders',
  namespace: 'shop',
  service: 'orders',
  address,
  labels: {},
  serverId,
});

describe('registry shared between replicas', () => {
  let dir: string;
  let logs: Array<Record<string, unknown>>;
  const logger = () => captureLogs({ name: 't', into: logs }).logger;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-share-'));
    logs = [];
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("each replica serves the other's endpoints; a file not renewed within the lease is ignored; close removes its file", async () => {
    const clock = createFakeClock(Date.now());
    const metrics = createPolicyServerMetrics({ defaultMetrics: false });
    const a = createServiceRegistry([]);
    const b = createServiceRegistry([]);
    const shareA = createRegistryShare(a, { folder: dir, serverId: 'a', leaseMs: 30_000, debounceMs: 1 }, { clock, logger: logger(), metrics });
    const shareB = createRegistryShare(b, { folder: dir, serverId: 'b', leaseMs: 30_000, debounceMs: 1 }, { clock, logger: logger(), metrics });
    a.register(ep('10.0.0.1:1', 'a'));
    await shareA.start();
    await shareB.start();
    expect(b.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:1']);

    // A replica that stopped renewing (crashed) drops out once its lease has passed.
    await writeFile(path.join(dir, 'gone.1234.json'), JSON.stringify({ serverId: 'gone', renewedAt: clock.now() - 31_000, endpoints: [ep('10.0.0.9:1', 'gone')] }));
    await shareB.refresh();
    expect(b.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:1']);

    await shareA.close();
    expect((await readdir(dir)).filter((n) => n.startsWith('a.'))).toEqual([]);
    await shareB.refresh();
    expect(b.services()).toEqual([]);
    await shareB.close();
  });

  it('deletes the files a replica killed without close left behind once two leases passed, its cut-short temp file too', async () => {
    const clock = createFakeClock(Date.now());
    const metrics = createPolicyServerMetrics({ defaultMetrics: false });
    const r = createServiceRegistry([]);
    const share = createRegistryShare(r, { folder: dir, serverId: 'b', leaseMs: 30_000, debounceMs: 1 }, { clock, logger: logger(), metrics });
    await share.start();
    const own = await readdir(dir);
    // What three SIGKILLed restarts of replica a leave: one file per process, and a write cut short.
    const left = { serverId: 'a', endpoints: [ep('10.0.0.9:1', 'a')] };
    await writeFile(path.join(dir, 'a.00000001.json'), JSON.stringify({ ...left, renewedAt: clock.now() - 61_000 }));
    await writeFile(path.join(dir, 'a.00000002.json'), JSON.stringify({ ...left, renewedAt: clock.now() - 45_000 }));
    await writeFile(path.join(dir, 'a.00000003.json'), JSON.stringify({ ...left, renewedAt: clock.now() - 1_000 }));
    const temp = path.join(dir, '.a.00000003.json.0123456789ab.tmp');
    await writeFile(temp, '{"serverId":"a","renewedAt":');
    await share.refresh();
    // Past two leases: gone. Within two leases: kept (ignored past one). Live: served.
    expect((await readdir(dir)).sort()).toEqual([temp, 'a.00000002.json', 'a.00000003.json', ...own].map((n) => path.basename(n)).sort());
    expect(r.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.9:1']);
    expect(logs.filter((l) => String(l.msg).startsWith('removed the shared registry file')).map((l) => path.basename(String(l.file)))).toEqual(['a.00000001.json']);

    clock.advance(61_000);
    const old = new Date(clock.now() - 61_000);
    await utimes(temp, old, old);
    await share.refresh();
    expect(await readdir(dir)).toEqual(own);
    expect(r.services()).toEqual([]);
    await share.close();
    expect(await readdir(dir)).toEqual([]);
  });

  it("degrades to this replica's own endpoints when the folder is unusable: one warning, counted", async () => {
    const notAFolder = path.join(dir, 'file');
    await writeFile(notAFolder, 'x');
    const metrics = createPolicyServerMetrics({ defaultMetrics: false });
    const r = createServiceRegistry([]);
    r.register(ep('10.0.0.1:1', 'a'));
    const share = createRegistryShare(r, { folder: notAFolder, serverId: 'a', leaseMs: 30_000, debounceMs: 1 }, { clock: createFakeClock(Date.now()), logger: logger(), metrics });
    await share.start();
    await share.refresh();
    expect(r.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:1']);
    const counted = (await metrics.registryShareErrors.get()).values.map((v) => [v.labels.op, v.value]).sort();
    expect(counted).toEqual([
      ['read', 2],
      ['write', 1],
    ]);
    expect(logs.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      "cannot write the shared registry; other replicas will not see this replica's endpoints",
      "cannot read the shared registry; serving this replica's endpoints only",
    ]);
    await share.close();
  });
});
