import { describe, expect, it } from 'vitest';
import type { Random } from '../../../src/core/clock.ts';
import { type BalancerKind, createBalancer } from '../../../src/outbound/balancer.ts';
import { createLeastRequestBalancer } from '../../../src/outbound/balancer-least-request.ts';
import { createRoundRobinBalancer } from '../../../src/outbound/balancer-round-robin.ts';
import { createWeightedBalancer } from '../../../src/outbound/balancer-weighted.ts';
import { type Balancer, createEndpoint, type UpstreamEndpoint } from '../../../src/outbound/endpoint.ts';

/** mulberry32: a small seeded PRNG so runs are repeatable. */
function seeded(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function counts(balancer: Balancer, eps: readonly UpstreamEndpoint[], picks: number): Map<string, number> {
  const out = new Map<string, number>(eps.map((ep) => [ep.address, 0]));
  for (let i = 0; i < picks; i++) {
    const ep = balancer.pick(eps);
    out.set(ep.address, out.get(ep.address)! + 1);
  }
  return out;
}

const three = (): UpstreamEndpoint[] => ['a:1', 'b:1', 'c:1'].map((a) => createEndpoint(a));

describe('round robin', () => {
  it('spreads picks evenly', () => {
    const c = counts(createRoundRobinBalancer(), three(), 300);
    expect([...c.values()]).toEqual([100, 100, 100]);
  });

  it('keeps rotating when the candidate set shrinks', () => {
    const eps = three();
    const rr = createRoundRobinBalancer();
    rr.pick(eps);
    rr.pick(eps);
    const c = counts(rr, eps.slice(0, 2), 100);
    expect([...c.values()]).toEqual([50, 50]);
  });
});

describe('least request', () => {
  it('prefers the idle endpoint', () => {
    const busy = createEndpoint('busy:1');
    busy.activeRequests = 10;
    const idle = createEndpoint('idle:1');
    const c = counts(createLeastRequestBalancer(seeded(42)), [busy, idle], 1000);
    // Two distinct choices out of two: the idle one always wins.
    expect(c.get('idle:1')).toBe(1000);
  });

  it('sends most picks to the idle endpoint among many busy ones', () => {
    const eps = ['a:1', 'b:1', 'c:1', 'd:1'].map((a) => createEndpoint(a));
    for (const ep of eps.slice(1)) ep.activeRequests = 10;
    const c = counts(createLeastRequestBalancer(seeded(7)), eps, 1000);
    // P(idle in a random pair of 4) = 1/2, versus 1/4 for a plain spread.
    expect(c.get('a:1')).toBeGreaterThan(400);
  });

  it('breaks ties by weight', () => {
    const light = createEndpoint('light:1', 1);
    const heavy = createEndpoint('heavy:1', 5);
    const c = counts(createLeastRequestBalancer(seeded(1)), [light, heavy], 100);
    expect(c.get('heavy:1')).toBe(100);
  });

  it('returns the only candidate', () => {
    const only = createEndpoint('only:1');
    expect(createLeastRequestBalancer(() => 0.999).pick([only])).toBe(only);
  });
});

describe('weighted', () => {
  it('splits 3:1 exactly and interleaves smoothly', () => {
    const a = createEndpoint('a:1', 3);
    const b = createEndpoint('b:1', 1);
    const w = createWeightedBalancer();
    const seq = Array.from({ length: 400 }, () => w.pick([a, b]).address[0]).join('');
    expect(seq.split('a').length - 1).toBe(300);
    expect(seq).toBe('aaba'.repeat(100));
  });

  it('follows nginx: 5:1:1 gives a a b a c a a', () => {
    const eps = [createEndpoint('a:1', 5), createEndpoint('b:1', 1), createEndpoint('c:1', 1)];
    const w = createWeightedBalancer();
    const seq = Array.from({ length: 14 }, () => w.pick(eps).address[0]).join('');
    expect(seq).toBe('aabacaa'.repeat(2));
  });

  it('copes with endpoints leaving and returning', () => {
    const a = createEndpoint('a:1', 2);
    const b = createEndpoint('b:1', 1);
    const c = createEndpoint('c:1', 1);
    const w = createWeightedBalancer();
    for (let i = 0; i < 5; i++) w.pick([a, b, c]);
    expect(new Set(Array.from({ length: 6 }, () => w.pick([a, c])))).toEqual(new Set([a, c]));
    const back = counts(w, [a, b, c], 400);
    expect(back.get('a:1')).toBeGreaterThanOrEqual(198);
    expect(back.get('a:1')).toBeLessThanOrEqual(202);
  });
});

describe('every balancer', () => {
  const kinds: BalancerKind[] = ['round_robin', 'least_request', 'weighted'];

  it.each(kinds)('%s avoids excluded endpoints', (kind) => {
    const eps = three();
    const b = createBalancer(kind, seeded(3));
    const exclude = new Set([eps[0]!, eps[2]!]);
    for (let i = 0; i < 50; i++) expect(b.pick(eps, exclude)).toBe(eps[1]);
  });

  it.each(kinds)('%s still picks when every candidate was tried', (kind) => {
    const eps = three();
    const b = createBalancer(kind, seeded(3));
    expect(eps).toContain(b.pick(eps, new Set(eps)));
  });

  it.each(kinds)('%s reaches every endpoint', (kind) => {
    const c = counts(createBalancer(kind, seeded(9)), three(), 300);
    for (const n of c.values()) expect(n).toBeGreaterThan(50);
  });
});
