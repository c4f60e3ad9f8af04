import type { Clock } from '../../core/clock.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { FilterDeps } from '../filter-kind.ts';
import type { ConcurrencySlots } from './concurrency-slots.ts';
import { createConcurrencySlots } from './concurrency-slots.ts';
import type { LocalBuckets } from './local-buckets.ts';
import { createLocalBuckets } from './local-buckets.ts';
import type { RateLimitStore } from './redis-store.ts';
import type { QueueOwner, ThrottleQueues } from './throttle-queues.ts';
import { createThrottleQueues } from './throttle-queues.ts';

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
  | 'fallback_limited'
  /** throttle or concurrency: admitted after waiting in the rule's queue. */
  | 'delayed'
  /** throttle: refused, the bucket's queue (or the sidecar's budget of waiting calls) is full. */
  | 'throttle_queue_full'
  /** throttle: refused, the caller's turn would come after maxDelay. */
  | 'throttle_delay_exceeded'
  /** concurrency: refused, max calls in flight and the queue full (or none). */
  | 'concurrency_exceeded'
  /** concurrency: refused after waiting maxWait for a slot. */
  | 'concurrency_timeout'
  /** throttle or concurrency: the caller left while it waited. */
  | 'cancelled';

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
  /** Calls that may wait in throttle and concurrency queues at once, all rules together (rateLimit.maxQueuedCalls); 10 000 when absent. */
  readonly maxQueuedCalls?: number;
}

/** One rule's calls in flight (concurrency rules) and waiting (throttle and concurrency), for the gauges. */
interface RuleUsage {
  readonly owner: QueueOwner;
  inFlight: number;
  queued: number;
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
  /** Queues of throttle rules, per local bucket. */
  readonly throttle: ThrottleQueues;
  /** Slots of concurrency rules, per rule and key. */
  readonly concurrency: ConcurrencySlots;
  /** Per rule with a call in flight or waiting, read at scrape time. */
  usage(): Map<string, RuleUsage>;
}

export function createRateLimitRuntime(deps: RateLimitRuntimeDeps): RateLimitRuntime {
  const replicas = deps.replicas;
  const local = deps.local ?? createLocalBuckets(100_000);
  const budget = { max: deps.maxQueuedCalls ?? 10_000, used: 0 };
  const throttle = createThrottleQueues(local, () => deps.clock.monotonic(), budget);
  const concurrency = createConcurrencySlots(budget);
  return {
    local,
    store: deps.store,
    clock: deps.clock,
    nextDecisionId: createDecisionIds(deps.random),
    metrics: deps.metrics,
    replicas: replicas ? () => replicas() : () => 1,
    workers: deps.workers ?? 1,
    logger: deps.logger,
    throttle,
    concurrency,
    usage() {
      const byRule = new Map<string, RuleUsage>();
      concurrency.usage(byRule);
      const queued = new Map<string, { owner: QueueOwner; queued: number }>();
      throttle.waiting(queued);
      for (const [id, q] of queued) {
        const sum = byRule.get(id);
        if (sum) sum.queued += q.queued;
        else byRule.set(id, { owner: q.owner, inFlight: 0, queued: q.queued });
      }
      return byRule;
    },
  };
}
