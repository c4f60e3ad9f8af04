import type { KeyPart } from './bucket-key.ts';
import type { ConcurrencyLimits } from './concurrency-slots.ts';
import type { BucketShape, TakeResult } from './gcra.ts';
import type { RateLimitHeaderMode } from './ratelimit-headers.ts';
import type { RateLimitDecision } from './ratelimit-runtime.ts';
import type { QueueOwner, ThrottleBounds } from './throttle-queues.ts';

/** A RateLimitPolicy rule compiled once per snapshot (ratelimit-filter.ts), and what it did to one call. */

export interface CompiledRule {
  /** `namespace/policy#rule`. */
  readonly id: string;
  readonly policy: string;
  readonly name: string;
  /** The labels of its queue and in-flight gauges. */
  readonly owner: QueueOwner;
  readonly shadow: boolean;
  readonly global: boolean;
  readonly failureMode: 'deny' | 'allow' | 'local';
  /** failureMode local: the limit divided by the replicas (split) or whole on each (per-replica). */
  readonly localFallback: 'split' | 'per-replica';
  readonly key: KeyPart;
  readonly shape: BucketShape;
  /** The rule and its shape: a changed limit starts new buckets. */
  readonly bucketPrefix: string;
  /** Its `ratelimit-policy` item (draft-ietf-httpapi-ratelimit-headers). */
  readonly policyItem: string;
  /** Which responses carry its fields; shadow rules' never do (they refuse nothing). */
  readonly headers: RateLimitHeaderMode;
  /** A rate rule whose callers over the rate wait (scope local only). */
  readonly throttle: ThrottleBounds | undefined;
  /** A concurrency rule (no bucket: `shape` and `policyItem` unused, headers none). */
  readonly concurrency: ConcurrencyLimits | undefined;
}

export interface RuleOutcome {
  readonly rule: CompiledRule;
  readonly decision: RateLimitDecision;
  readonly result: TakeResult | undefined;
}

/** Decisions that refuse the call (the first one names the refusal). */
export const REFUSING: ReadonlySet<RateLimitDecision> = new Set<RateLimitDecision>([
  'limited',
  'fallback_limited',
  'unavailable_denied',
  'throttle_queue_full',
  'throttle_delay_exceeded',
  'concurrency_exceeded',
  'concurrency_timeout',
  'cancelled',
]);
