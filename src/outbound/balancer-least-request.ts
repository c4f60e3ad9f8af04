import type { Random } from '../core/clock.ts';
import type { Balancer, UpstreamEndpoint } from './endpoint.ts';
import { untriedEndpoints } from './endpoint.ts';

/**
 * Power of two choices (Mitzenmacher): comparing two random endpoints gets
 * almost all the benefit of scanning every one, without herding onto the single
 * least-loaded endpoint that every sidecar would otherwise agree on.
 */
export function createLeastRequestBalancer(random: Random): Balancer {
  // random() may return values up to (but, by contract, not including) 1; clamp anyway.
  const index = (n: number): number => Math.min(n - 1, Math.floor(random() * n));

  return {
    pick(candidates: readonly UpstreamEndpoint[], exclude?: ReadonlySet<UpstreamEndpoint>): UpstreamEndpoint {
      const pool = untriedEndpoints(candidates, exclude);
      if (pool.length === 1) return pool[0]!;
      const i = index(pool.length);
      let j = index(pool.length - 1);
      if (j >= i) j++; // two distinct picks, each pair equally likely
      const a = pool[i]!;
      const b = pool[j]!;
      if (a.activeRequests !== b.activeRequests) return a.activeRequests < b.activeRequests ? a : b;
      if (a.weight !== b.weight) return a.weight > b.weight ? a : b;
      return random() < 0.5 ? a : b;
    },
  };
}
