import type { Clock } from '../../core/clock.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { FilterDeps } from '../filter-kind.ts';
import type { LocalBuckets } from './local-buckets.ts';
import { createLocalBuckets } from './local-buckets.ts';
import type { RateLimitStore } from './redis-store.ts';

/** What rate limiting did for one rule on one call; the `decision` label of meshgate_ratelimit_decisions_total. */
export type RateLimitDecision =
  | 'allowed'
  | 'limited'
  | 'shadow_limited'
  /** scope global, Redis did not answer: failureMode deny refused the call. */
  | 'unavailable_denied'
  /** scope global, Redis did not answer: failureMode allow admitted it uncounted. */
  | 'unavailable_allowed'
  /** scope global, Redis did not answer: failureMode local counted it here and admitted it. */
  | 'fallback_allowed'
  | 'fallback_limited';

/** The counters the filter feeds (SidecarMetrics has them); labels come from policy documents only. */
interface RateLimitMetrics {
  readonly rateLimitDecisions: { inc(labels: { policy: string; rule: string; decision: RateLimitDecision }): void };
  readonly shadowDenials: { inc(labels: { policy: string; rule: string }): void };
}

interface RateLimitLogger {
  info(fields: object, message: string): void;
}

export interface RateLimitRuntimeDeps extends FilterDeps {
  /** The bucket table; a table of 100 000 buckets when absent. */
  readonly local?: LocalBuckets;
  /** Redis for scope: global rules; undefined when rateLimit.redis is not configured. */
  readonly store?: RateLimitStore | undefined;
  readonly metrics?: RateLimitMetrics;
  /**
   * Replicas of this sidecar's own service in the registry (at least 1): a
   * global rule with failureMode local and localFallback split divides its
   * limit by it while Redis is away. 1 when absent.
   */
  readonly replicas?: () => number;
  /** Worker processes of this sidecar, each with its own local buckets: local limits are divided by it. 1 when absent. */
  readonly workers?: number | undefined;
  /** Limited and shadow-limited calls, at most one line per rule per second (a flood must not become a log flood). */
  readonly logger?: RateLimitLogger;
}

/**
 * What outlives every snapshot's filter, created once per sidecar: the
 * buckets (a new snapshot must not refill them), the Redis connection.
 */
export interface RateLimitRuntime {
  readonly local: LocalBuckets;
  readonly store: RateLimitStore | undefined;
  /** Local buckets run on clock.monotonic(). */
  readonly clock: Clock;
  /** Decision ids of refusals when no earlier filter made one. */
  readonly nextDecisionId: () => string;
  readonly metrics: RateLimitMetrics | undefined;
  readonly replicas: () => number;
  readonly workers: number;
  readonly logger: RateLimitLogger | undefined;
}

export function createRateLimitRuntime(deps: RateLimitRuntimeDeps): RateLimitRuntime {
  const replicas = deps.replicas;
  return {
    local: deps.local ?? createLocalBuckets(100_000),
    store: deps.store,
    clock: deps.clock,
    nextDecisionId: createDecisionIds(deps.random),
    metrics: deps.metrics,
    replicas: replicas ? () => replicas() : () => 1,
    workers: deps.workers ?? 1,
    logger: deps.logger,
  };
}
