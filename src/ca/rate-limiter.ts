import type { Clock } from '../core/clock.ts';

export interface RateLimiter {
  /** Takes one request from `key`'s bucket; false when it is empty. */
  take(key: string): boolean;
}

/** Above this many tracked keys, full buckets are swept: they carry no information. */
const SWEEP_THRESHOLD = 10_000;

/**
 * A token bucket per key: `requests` per `windowMs`, refilled evenly, a full
 * bucket to start. Keys are authenticated identities, so an attacker cannot
 * mint keys without minting tokens; the sweep still bounds memory.
 */
export function createRateLimiter(opts: { requests: number; windowMs: number; clock: Clock }): RateLimiter {
  const { requests, windowMs, clock } = opts;
  const perMs = requests / windowMs;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const refill = (bucket: { tokens: number; at: number }, now: number): void => {
    bucket.tokens = Math.min(requests, bucket.tokens + (now - bucket.at) * perMs);
    bucket.at = now;
  };
  return {
    take(key) {
      const now = clock.monotonic();
      if (buckets.size >= SWEEP_THRESHOLD) {
        for (const [k, bucket] of buckets) {
          refill(bucket, now);
          if (bucket.tokens >= requests) buckets.delete(k);
        }
      }
      let bucket = buckets.get(key);
      if (!bucket) {
        bucket = { tokens: requests, at: now };
        buckets.set(key, bucket);
      } else {
        refill(bucket, now);
      }
      if (bucket.tokens < 1) return false;
      bucket.tokens -= 1;
      return true;
    },
  };
}
