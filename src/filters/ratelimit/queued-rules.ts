import type { CallContext } from '../../core/call-context.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE } from '../../core/verdict.ts';
import { localBucketKey } from './bucket-key.ts';
import type { ConcurrencyLimits } from './concurrency-slots.ts';
import type { BucketShape } from './gcra.ts';
import type { CompiledRule, RuleOutcome } from './ratelimit-rule.ts';
import { REFUSING } from './ratelimit-rule.ts';
import type { RateLimitDecision, RateLimitRuntime } from './ratelimit-runtime.ts';

/*
 * The evaluation of a snapshot with throttle or concurrency rules: the rules
 * that match a call count it in order, synchronously until one makes it wait
 * (a throttle queue, a concurrency queue), then after the wait from the next
 * rule on. Only snapshots with such a rule pay for this; the others keep the
 * synchronous loop of ratelimit-filter.ts.
 *
 * Once a rule refused the call, later rules take tokens as before but the
 * call waits in no queue and holds no slot. A concurrency slot is released by
 * the inbound stack when the call is over (CallAnnotations.onCallEnd), so a
 * refusal by any later rule or filter releases it too. While the call waits,
 * CallAnnotations.onCallerGone takes it out of the queue.
 */

export interface QueuedEvaluationDeps {
  readonly runtime: RateLimitRuntime;
  readonly localShape: (rule: CompiledRule) => BucketShape;
  readonly takeLocal: (rule: CompiledRule, value: string, ifAllowed: RateLimitDecision, ifLimited: RateLimitDecision) => RuleOutcome;
  readonly takeGlobal: (rule: CompiledRule, value: string) => Promise<RuleOutcome>;
  readonly conclude: (call: CallContext, outcomes: readonly RuleOutcome[]) => Verdict;
}

interface Progress {
  readonly outcomes: RuleOutcome[];
  global: { rule: CompiledRule; value: string }[] | undefined;
  refused: boolean;
}

/** Holds `release` until the call is over: the inbound stack calls onCallEnd once, whatever ended the call. */
function holdUntilEnd(call: CallContext, release: () => void): void {
  const before = call.annotations.onCallEnd;
  call.annotations.onCallEnd = before
    ? () => {
        before();
        release();
      }
    : release;
}

/** Waits for `settled` with `leave` as the call's way out if the caller goes. */
function whileWaiting<T>(call: CallContext, settled: Promise<T>, leave: () => void): Promise<T> {
  call.annotations.onCallerGone = leave;
  return settled.then((outcome) => {
    call.annotations.onCallerGone = undefined;
    return outcome;
  });
}

/** Per-worker share of a queue, as local rates are divided: one place at least if it has any. */
function queueShare(queue: number, workers: number): number {
  return queue === 0 || workers === 1 ? queue : Math.max(1, Math.floor(queue / workers));
}

/** Per-worker share of a concurrency limit: at least one slot. */
function shareOf(limits: ConcurrencyLimits, workers: number): ConcurrencyLimits {
  if (workers === 1) return limits;
  return { max: Math.max(1, Math.floor(limits.max / workers)), queue: queueShare(limits.queue, workers), maxWaitMs: limits.maxWaitMs };
}

export function createQueuedEvaluation(deps: QueuedEvaluationDeps): (call: CallContext, matched: readonly CompiledRule[]) => Verdict | Promise<Verdict> {
  const { runtime, localShape, takeLocal, takeGlobal, conclude } = deps;
  const workers = Math.max(1, Math.floor(runtime.workers));
  const cancelled = (rule: CompiledRule): RuleOutcome => ({ rule, result: undefined, decision: 'cancelled' });

  const throttled = (call: CallContext, rule: CompiledRule, value: string, bounds: NonNullable<CompiledRule['throttle']>): RuleOutcome | Promise<RuleOutcome> => {
    if (call.annotations.callerGone) return cancelled(rule);
    const answer = runtime.throttle.take(localBucketKey(rule.bucketPrefix, value), localShape(rule), { queue: queueShare(bounds.queue, workers), maxDelayMs: bounds.maxDelayMs }, rule.owner);
    if (answer.kind === 'admitted') return { rule, result: answer.result, decision: 'allowed' };
    if (answer.kind === 'shed') {
      const result = { allowed: false, remaining: 0, retryAfterMs: answer.retryAfterMs, resetMs: answer.retryAfterMs };
      return { rule, result, decision: answer.why === 'queue_full' ? 'throttle_queue_full' : 'throttle_delay_exceeded' };
    }
    return whileWaiting(call, answer.released, answer.leave).then((r) => (r === 'gone' ? cancelled(rule) : { rule, result: r, decision: 'delayed' }));
  };

  const slot = (call: CallContext, rule: CompiledRule, value: string, limits: ConcurrencyLimits): RuleOutcome | Promise<RuleOutcome> => {
    const key = localBucketKey(rule.id, value);
    const share = shareOf(limits, workers);
    if (rule.shadow) {
      const { release, over } = runtime.concurrency.acquireShadow(key, share.max, rule.owner);
      holdUntilEnd(call, release);
      return { rule, result: undefined, decision: over ? 'shadow_limited' : 'allowed' };
    }
    if (call.annotations.callerGone) return cancelled(rule);
    const answer = runtime.concurrency.acquire(key, share, rule.owner);
    if (answer.kind === 'admitted') {
      holdUntilEnd(call, answer.release);
      return { rule, result: undefined, decision: 'allowed' };
    }
    if (answer.kind === 'refused') return { rule, result: undefined, decision: 'concurrency_exceeded' };
    return whileWaiting(call, answer.admitted, answer.leave).then((r) => {
      if (r === 'gone') return cancelled(rule);
      if (r === 'timeout') return { rule, result: undefined, decision: 'concurrency_timeout' };
      holdUntilEnd(call, r);
      return { rule, result: undefined, decision: 'delayed' };
    });
  };

  const record = (progress: Progress, outcome: RuleOutcome): void => {
    progress.outcomes.push(outcome);
    if (REFUSING.has(outcome.decision)) progress.refused = true;
  };

  const evaluate = (call: CallContext, matched: readonly CompiledRule[], from: number, progress: Progress): Verdict | Promise<Verdict> => {
    for (let i = from; i < matched.length; i++) {
      const rule = matched[i]!;
      const value = rule.key(call);
      if (rule.global) {
        (progress.global ??= []).push({ rule, value });
        continue;
      }
      let step: RuleOutcome | Promise<RuleOutcome>;
      if (rule.concurrency) {
        if (progress.refused) continue; // a refused call holds no slot
        step = slot(call, rule, value, rule.concurrency);
      } else if (rule.throttle && !rule.shadow) {
        if (progress.refused) continue; // nor waits, nor takes a token from under the queue
        step = throttled(call, rule, value, rule.throttle);
      } else {
        step = takeLocal(rule, value, 'allowed', rule.shadow ? 'shadow_limited' : 'limited');
      }
      if (step instanceof Promise) {
        return step.then((outcome) => {
          record(progress, outcome);
          return evaluate(call, matched, i + 1, progress);
        });
      }
      record(progress, step);
    }
    // Refused here already: Redis is not asked, as in the synchronous loop.
    if (!progress.global || progress.refused) return progress.outcomes.length > 0 ? conclude(call, progress.outcomes) : CONTINUE;
    const counted = progress.outcomes;
    return Promise.all(progress.global.map(({ rule, value }) => takeGlobal(rule, value))).then((results) => conclude(call, counted.concat(results)));
  };

  return (call, matched) => (matched.length === 0 ? CONTINUE : evaluate(call, matched, 0, { outcomes: [], global: undefined, refused: false }));
}
