import type { Random } from '../core/clock.ts';
import { createLeastRequestBalancer } from './balancer-least-request.ts';
import { createRoundRobinBalancer } from './balancer-round-robin.ts';
import { createWeightedBalancer } from './balancer-weighted.ts';
import type { Balancer } from './endpoint.ts';

/** The `loadBalancer` values of a service in the sidecar config. */
export type BalancerKind = 'round_robin' | 'least_request' | 'weighted';

/** One balancer per cluster: each keeps its own rotation state. */
export function createBalancer(kind: BalancerKind, random: Random): Balancer {
  switch (kind) {
    case 'round_robin':
      return createRoundRobinBalancer();
    case 'least_request':
      return createLeastRequestBalancer(random);
    case 'weighted':
      return createWeightedBalancer();
    default: {
      const unknown: never = kind;
      throw new Error(`unknown load balancer: ${String(unknown)}`);
    }
  }
}
