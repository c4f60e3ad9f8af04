import { describe, expect, it } from 'vitest';
import type { RegisteredEndpoint } from '../../../src/policy-server/service-registry.ts';
import { createServiceRegistry } from '../../../src/policy-server/service-registry.ts';

const ep = (over: Partial<RegisteredEndpoint>): RegisteredEndpoint => ({
  streamId: 's1',
  sidecarId: 'sc-1',
  spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders',
  namespace: 'shop',
  service: 'orders',
  address: '10.0.0.1:15006',
  labels: {},
  serverId: 'a',
  ...over,
});

const STATIC = [
  { name: 'payments', namespace: 'external', endpoints: [{ address: 'pay.example:443', labels: {}, weight: 1 }], identities: [], external: true },
  {
    name: 'orders',
    namespace: 'shop',
    endpoints: [{ address: '10.0.0.9:15006', labels: { version: 'legacy' }, weight: 5 }],
    identities: ['spiffe://cluster.local/ns/shop/sa/orders'],
    external: false,
  },
];

describe('service registry', () => {
  it('merges static entries and registered endpoints in a canonical order', () => {
    const r = createServiceRegistry(STATIC);
    r.register(ep({ streamId: 's2', sidecarId: 'sc-2', address: '10.0.0.2:15006', labels: { zone: 'b', version: 'v2' } }));
    r.register(ep({ streamId: 's1', sidecarId: 'sc-1', address: '10.0.0.1:15006' }));
    r.register(ep({ streamId: 's3', service: 'frontend', spiffeId: 'spiffe://cluster.local/ns/shop/sa/frontend', address: '10.0.0.3:15006' }));
    expect(r.services()).toEqual([
      { name: 'payments', namespace: 'external', endpoints: [{ address: 'pay.example:443', labels: {}, weight: 1 }], identities: [], external: true },
      { name: 'frontend', namespace: 'shop', endpoints: [{ address: '10.0.0.3:15006', labels: {}, weight: 1 }], identities: [], external: false },
      {
        name: 'orders',
        namespace: 'shop',
        endpoints: [
          { address: '10.0.0.1:15006', labels: {}, weight: 1 },
          { address: '10.0.0.2:15006', labels: { version: 'v2', zone: 'b' }, weight: 1 },
          { address: '10.0.0.9:15006', labels: { version: 'legacy' }, weight: 5 },
        ],
        identities: ['spiffe://cluster.local/ns/shop/sa/orders'],
        external: false,
      },
    ]);
    expect(Object.keys(r.services()[2]!.endpoints[1]!.labels)).toEqual(['version', 'zone']);
  });

  it('gives the same output whatever the order of registrations and whichever replica holds them', () => {
    const a = createServiceRegistry([]);
    const b = createServiceRegistry([]);
    const e1 = ep({ streamId: 'a#1', sidecarId: 'x', address: '10.0.0.1:1', serverId: 'a' });
    const e2 = ep({ streamId: 'b#7', sidecarId: 'y', address: '10.0.0.2:1', serverId: 'b' });
    a.register(e1);
    a.setRemote([e2]);
    b.register(e2);
    b.setRemote([e1]);
    expect(JSON.stringify(a.services())).toBe(JSON.stringify(b.services()));
  });

  it('lists an address once: static first, then the smallest sidecarId', () => {
    const r = createServiceRegistry(STATIC);
    r.register(ep({ streamId: 's1', sidecarId: 'zz', address: '10.0.0.9:15006', labels: { version: 'new' } }));
    r.register(ep({ streamId: 's2', sidecarId: 'b', address: '10.0.0.4:1', labels: { from: 'b' } }));
    r.setRemote([ep({ streamId: 'x', sidecarId: 'a', address: '10.0.0.4:1', labels: { from: 'a' } })]);
    const orders = r.services().find((s) => s.name === 'orders')!;
    expect(orders.endpoints).toEqual([
      { address: '10.0.0.4:1', labels: { from: 'a' }, weight: 1 },
      { address: '10.0.0.9:15006', labels: { version: 'legacy' }, weight: 5 },
    ]);
  });

  it('notifies only when the served registry changes', () => {
    const r = createServiceRegistry([]);
    let calls = 0;
    r.onChange(() => calls++);
    r.register(ep({}));
    expect(calls).toBe(1);
    r.setRemote([ep({ streamId: 'other', serverId: 'b' })]);
    expect(calls).toBe(1);
    r.unregister('s1');
    expect(calls).toBe(1);
    r.setRemote([]);
    expect(calls).toBe(2);
    expect(r.services()).toEqual([]);
    r.unregister('unknown');
    expect(calls).toBe(2);
  });
});
