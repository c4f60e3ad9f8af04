import { describe, expect, it } from 'vitest';
import type { RegistryService } from '../../../src/policy/types.ts';
import { createRegistryKeeper } from '../../../src/sidecar/registry-keeper.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

const svc = (name: string, ...addresses: string[]): RegistryService => ({
  name,
  namespace: 'shop',
  endpoints: addresses.map((address) => ({ address, labels: {}, weight: 1 })),
  identities: [],
  external: false,
});

const addressesOf = (services: readonly RegistryService[]): Record<string, string[]> => Object.fromEntries(services.map((s) => [`${s.name}.${s.namespace}`, s.endpoints.map((e) => e.address)]));

function keeper(opts: { holdMs?: number; working?: Set<string> } = {}) {
  const clock = createFakeClock();
  const working = opts.working ?? new Set<string>();
  const events: string[] = [];
  const k = createRegistryKeeper({
    holdMs: opts.holdMs ?? 45_000,
    clock,
    working: (name, namespace) => working.has(`${name}.${namespace}`),
    events: { held: (s) => events.push(`held ${s}`), released: (s, why) => events.push(`released ${s}: ${why}`) },
  });
  return { k, clock, working, events };
}

describe('registry keeper', () => {
  it('serves a complete push as it is', () => {
    const { k } = keeper();
    const out = k.resolve([svc('orders', 'a:1', 'b:1'), svc('cart', 'c:1')], false);
    expect(addressesOf(out.services)).toEqual({ 'orders.shop': ['a:1', 'b:1'], 'cart.shop': ['c:1'] });
    expect(out.recheckInMs).toBeUndefined();
  });

  it('warming: adds pushed endpoints to the served ones, never drops a service or an endpoint', () => {
    const { k } = keeper();
    k.resolve([svc('orders', 'a:1', 'b:1'), svc('cart', 'c:1')], false);
    // A restarted server: only cart's sidecar and a new orders endpoint have rejoined.
    const out = k.resolve([svc('cart', 'c:1'), svc('orders', 'n:1')], true);
    expect(addressesOf(out.services)).toEqual({ 'cart.shop': ['c:1'], 'orders.shop': ['n:1', 'a:1', 'b:1'] });
    // The warm-up ends: the complete push wins (a:1 and b:1 never came back).
    expect(addressesOf(k.resolve([svc('cart', 'c:1'), svc('orders', 'n:1')], false).services)).toEqual({ 'cart.shop': ['c:1'], 'orders.shop': ['n:1'] });
  });

  it('hold: a push dropping every endpoint of a service that answered recently keeps them until holdMs or a push lists some', () => {
    const { k, clock, working, events } = keeper({ holdMs: 10_000 });
    k.resolve([svc('orders', 'a:1')], false);
    working.add('orders.shop');
    const dropped = k.resolve([], false);
    expect(addressesOf(dropped.services)).toEqual({ 'orders.shop': ['a:1'] });
    expect(dropped.held).toEqual(['orders.shop']);
    expect(dropped.recheckInMs).toBe(10_000);
    clock.advance(4_000);
    expect(k.resolve([], false).recheckInMs).toBe(6_000);
    // Its sidecar rejoins at a new address: the hold ends, the push is served.
    expect(addressesOf(k.resolve([svc('orders', 'z:1')], false).services)).toEqual({ 'orders.shop': ['z:1'] });
    expect(events).toEqual(['held orders.shop', 'released orders.shop: endpoints listed again']);
  });

  it('hold: expires after holdMs; the service stays known with no endpoint', () => {
    const { k, clock, working, events } = keeper({ holdMs: 10_000 });
    k.resolve([svc('orders', 'a:1')], false);
    working.add('orders.shop');
    k.resolve([], false);
    clock.advance(10_000);
    const out = k.resolve([], false);
    expect(addressesOf(out.services)).toEqual({ 'orders.shop': [] });
    expect(out.recheckInMs).toBeUndefined();
    expect(events).toEqual(['held orders.shop', 'released orders.shop: hold expired']);
  });

  it('no hold for endpoints that were not answering, nor with holdMs 0: known, no endpoint', () => {
    const idle = keeper();
    idle.k.resolve([svc('orders', 'a:1')], false);
    expect(addressesOf(idle.k.resolve([], false).services)).toEqual({ 'orders.shop': [] });
    const off = keeper({ holdMs: 0, working: new Set(['orders.shop']) });
    off.k.resolve([svc('orders', 'a:1')], false);
    expect(addressesOf(off.k.resolve([svc('orders')], false).services)).toEqual({ 'orders.shop': [] });
    expect([...idle.events, ...off.events]).toEqual([]);
  });

  it('an update that keeps one endpoint is served as is: a hold is for "all gone" only', () => {
    const { k } = keeper({ working: new Set(['orders.shop']) });
    k.resolve([svc('orders', 'a:1', 'b:1')], false);
    expect(addressesOf(k.resolve([svc('orders', 'b:1')], false).services)).toEqual({ 'orders.shop': ['b:1'] });
  });
});
