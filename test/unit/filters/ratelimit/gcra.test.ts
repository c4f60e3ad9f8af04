import { describe, expect, it } from 'vitest';
import { bucketShape, takeToken } from '../../../../src/filters/ratelimit/gcra.ts';
import { createLocalBuckets } from '../../../../src/filters/ratelimit/local-buckets.ts';

describe('GCRA token bucket', () => {
  const shape = bucketShape({ requests: 10, per: 1000 }, 3); // a token every 100 ms, 3 at once

  it('admits a burst, then one call per interval, and says when the next one fits', () => {
    let tat: number | undefined;
    const at = (now: number) => {
      const r = takeToken(tat, now, shape);
      tat = r.tat;
      return r;
    };
    expect([at(0), at(0), at(0)].map((r) => [r.allowed, r.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 0],
    ]);
    const refused = at(0);
    expect(refused).toMatchObject({ allowed: false, remaining: 0, retryAfterMs: 100 });
    expect(at(99).allowed).toBe(false);
    expect(at(100).allowed).toBe(true);
    expect(at(100).allowed).toBe(false);
    // Idle long enough and the whole burst is back, never more.
    expect([at(10_000), at(10_000), at(10_000), at(10_000)].map((r) => r.allowed)).toEqual([true, true, true, false]);
  });

  it('holds the sustained rate over a long run: 10/s for 10 s admits 3 + 100 calls, not 2x at window edges', () => {
    let tat: number | undefined;
    let admitted = 0;
    for (let now = 0; now <= 10_000; now += 5) {
      for (let i = 0; i < 4; i++) {
        const r = takeToken(tat, now, shape);
        tat = r.tat;
        if (r.allowed) admitted++;
      }
    }
    expect(admitted).toBe(3 + 100);
  });

  it('admits every call of a caller that keeps exactly to the rate, even when the interval is no round number', () => {
    for (const shape of [bucketShape({ requests: 3, per: 1000 }, 1), bucketShape({ requests: 7, per: 1000 }, 2), bucketShape({ requests: 1, per: 3 }, 1)]) {
      let tat: number | undefined;
      const refusedAt: number[] = [];
      for (let k = 0; k < 1000; k++) {
        const now = 5 + k * shape.intervalMs; // a fresh caller pacing itself at the rate
        const r = takeToken(tat, now, shape);
        tat = r.tat;
        if (!r.allowed) refusedAt.push(k);
      }
      expect(refusedAt).toEqual([]);
    }
  });

  it('defaults the burst to the requests of the period', () => {
    expect(bucketShape({ requests: 5, per: 60_000 }, undefined)).toEqual({ intervalMs: 12_000, burst: 5 });
  });
});

describe('local bucket table', () => {
  const shape = bucketShape({ requests: 1, per: 1000 }, 1);

  it('keeps each key its own bucket', () => {
    const buckets = createLocalBuckets(1000);
    expect(buckets.take('a', shape, 0).allowed).toBe(true);
    expect(buckets.take('a', shape, 0).allowed).toBe(false);
    expect(buckets.take('b', shape, 0).allowed).toBe(true);
  });

  it('stays bounded: full buckets go first, then the least recently used one, counted as an eviction', () => {
    let evicted = 0;
    const buckets = createLocalBuckets(3, { evicted: () => evicted++ });
    buckets.take('a', shape, 0);
    buckets.take('b', shape, 0);
    buckets.take('c', shape, 5_000); // a and b are full again by now
    buckets.take('d', shape, 5_000);
    expect(buckets.size).toBeLessThanOrEqual(3);
    expect(evicted).toBe(0);
    buckets.take('e', shape, 5_000); // c and d still empty: one of them must go
    buckets.take('f', shape, 5_000);
    expect(buckets.size).toBe(3);
    expect(evicted).toBe(1);
    // The survivors are the most recently used.
    expect(buckets.take('f', shape, 5_000).allowed).toBe(false);
    expect(buckets.take('e', shape, 5_000).allowed).toBe(false);
  });

  it('a caller taking again and again keeps its place; the one used least recently goes first', () => {
    const buckets = createLocalBuckets(3);
    for (const key of ['a', 'b', 'c', 'c', 'c', 'a']) buckets.take(key, shape, 0); // order of use now: b, c, a
    buckets.take('d', shape, 0); // none is full again: b, the least recently used, goes
    expect(buckets.take('b', shape, 0).allowed).toBe(true); // a full bucket again (c went for it)
    expect(buckets.take('a', shape, 0).allowed).toBe(false);
    expect(buckets.take('d', shape, 0).allowed).toBe(false);
  });
});
