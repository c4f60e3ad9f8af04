import { describe, expect, it } from 'vitest';
import { createRateLimiter } from '../../../src/ca/rate-limiter.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

describe('createRateLimiter: a token bucket per identity', () => {
  it('allows a full window at once, then refills evenly', () => {
    const clock = createFakeClock();
    const limiter = createRateLimiter({ requests: 4, windowMs: 60_000, clock });
    expect([1, 2, 3, 4, 5].map(() => limiter.take('a'))).toEqual([true, true, true, true, false]);
    clock.advance(14_999);
    expect(limiter.take('a')).toBe(false);
    clock.advance(1);
    expect(limiter.take('a')).toBe(true);
    expect(limiter.take('a')).toBe(false);
  });

  it('keeps identities apart', () => {
    const clock = createFakeClock();
    const limiter = createRateLimiter({ requests: 1, windowMs: 60_000, clock });
    expect(limiter.take('a')).toBe(true);
    expect(limiter.take('a')).toBe(false);
    expect(limiter.take('b')).toBe(true);
  });

  it('never banks more than one window', () => {
    const clock = createFakeClock();
    const limiter = createRateLimiter({ requests: 2, windowMs: 1_000, clock });
    limiter.take('a');
    clock.advance(3_600_000);
    expect([1, 2, 3].map(() => limiter.take('a'))).toEqual([true, true, false]);
  });
});
