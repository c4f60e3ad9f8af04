import type { Balancer, UpstreamEndpoint } from './endpoint.ts';

/** Plain rotation. The cursor is per instance, so each cluster rotates on its own. */
export function createRoundRobinBalancer(): Balancer {
  let cursor = 0;
  return {
    pick(candidates: readonly UpstreamEndpoint[], exclude?: ReadonlySet<UpstreamEndpoint>): UpstreamEndpoint {
      const n = candidates.length;
      // Modulo on read: the candidate set shrinks and grows as endpoints are ejected and return.
      const start = cursor % n;
      for (let k = 0; k < n; k++) {
        const i = (start + k) % n;
        const ep = candidates[i]!;
        if (exclude === undefined || !exclude.has(ep)) {
          cursor = i + 1;
          return ep;
        }
      }
      // Every candidate was already tried: retrying one beats failing the call.
      cursor = start + 1;
      return candidates[start]!;
    },
  };
}
