import type { Balancer, UpstreamEndpoint } from './endpoint.ts';
import { untriedEndpoints } from './endpoint.ts';

/**
 * Smooth weighted round robin, nginx's algorithm (ngx_http_upstream_get_peer):
 * weights 5:1:1 give a a b a c a a rather than a a a a a b c, so a heavy
 * endpoint never receives a burst.
 *
 * Each endpoint's current weight lives in a WeakMap keyed by the endpoint
 * object, so the candidate set may change between calls (ejections, health,
 * registry updates) and endpoints dropped by the registry are garbage collected.
 * An endpoint absent from a call keeps its current weight and resumes from it
 * when it returns; the values stay bounded by the total weight, so long-run
 * shares still follow the weights.
 */
export function createWeightedBalancer(): Balancer {
  const current = new WeakMap<UpstreamEndpoint, number>();

  return {
    pick(candidates: readonly UpstreamEndpoint[], exclude?: ReadonlySet<UpstreamEndpoint>): UpstreamEndpoint {
      const pool = untriedEndpoints(candidates, exclude);
      let total = 0;
      let best: UpstreamEndpoint | undefined;
      let bestWeight = -Infinity;
      for (const ep of pool) {
        const weight = Math.max(0, ep.weight);
        const cw = (current.get(ep) ?? 0) + weight;
        current.set(ep, cw);
        total += weight;
        // Strictly greater: ties go to the earlier endpoint, as in nginx.
        if (cw > bestWeight) {
          best = ep;
          bestWeight = cw;
        }
      }
      // Defined: candidates is never empty (Balancer contract) and weights are finite.
      current.set(best!, bestWeight - total);
      return best!;
    },
  };
}
