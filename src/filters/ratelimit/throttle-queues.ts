import type { BucketShape, TakeResult } from './gcra.ts';
import type { LocalBuckets } from './local-buckets.ts';

/*
 * The queues of throttling rules: a caller over its rate waits in its
 * bucket's FIFO queue and is released when the bucket has a token again, one
 * per emission interval, instead of being refused at once.
 *
 * A queue exists only while a caller waits in it, keyed by the local bucket
 * it takes from, and one timer per queue (not per caller) fires when the
 * head's token is due. While a queue holds callers, a newcomer queues behind
 * them even if a token came back meanwhile: FIFO. Its turn is known when it
 * arrives (the head's release time plus one interval per caller ahead), so a
 * caller whose turn would come after maxDelay is refused at once rather than
 * after waiting for nothing. A caller that leaves is marked and skipped
 * without taking a token, so it costs the callers behind it nothing.
 *
 * Bounded: each queue by the rule's `queue`, all queues together (with the
 * concurrency queues) by the sidecar's budget of waiting calls, which also
 * bounds the number of queues.
 */

/** Calls waiting in any queue of the runtime, throttle and concurrency together (rateLimit.maxQueuedCalls). */
export interface WaitBudget {
  readonly max: number;
  used: number;
}

/** Whose queue: the labels of the queued-calls gauge. */
export interface QueueOwner {
  readonly policy: string;
  readonly rule: string;
}

type ThrottleAnswer =
  /** A token at once: the call goes on. */
  | { readonly kind: 'admitted'; readonly result: TakeResult }
  /** Queued: `released` settles with the token's take, or 'gone' once `leave` was called. */
  | { readonly kind: 'queued'; readonly released: Promise<TakeResult | 'gone'>; leave(): void }
  /** Refused: the queue (or the sidecar's budget) is full, or the turn would come after maxDelay. `retryAfterMs`: when the turn would have come. */
  | { readonly kind: 'shed'; readonly why: 'queue_full' | 'delay_exceeded'; readonly retryAfterMs: number };

export interface ThrottleBounds {
  readonly queue: number;
  readonly maxDelayMs: number;
}

interface Waiter {
  gone: boolean;
  settle(result: TakeResult | 'gone'): void;
}

interface Queue {
  readonly key: string;
  readonly shape: BucketShape;
  readonly owner: QueueOwner;
  readonly waiters: Waiter[];
  /** Waiters not gone. */
  live: number;
  /** Monotonic ms at which the head's token is due (the timer's time). */
  dueAt: number;
  timer: NodeJS.Timeout | undefined;
}

export interface ThrottleQueues {
  take(key: string, shape: BucketShape, bounds: ThrottleBounds, owner: QueueOwner): ThrottleAnswer;
  /** Queues with a caller waiting. */
  readonly size: number;
  /** Callers waiting, per rule, for the gauge. */
  waiting(into: Map<string, { owner: QueueOwner; queued: number }>): void;
}

export function createThrottleQueues(local: LocalBuckets, monotonic: () => number, budget: WaitBudget): ThrottleQueues {
  const queues = new Map<string, Queue>();

  const schedule = (q: Queue, now: number, waitMs: number): void => {
    q.dueAt = now + waitMs;
    // A timer cannot fire early by design, but a sub-millisecond wait rounds to 1 ms; the take decides anyway.
    q.timer = setTimeout(release, Math.max(0, Math.ceil(waitMs)), q);
  };

  const drop = (q: Queue): void => {
    if (q.timer) clearTimeout(q.timer);
    q.timer = undefined;
    if (queues.get(q.key) === q) queues.delete(q.key);
  };

  /** The head's token is due: release every waiter a token is there for, then wait for the next one. */
  function release(q: Queue): void {
    q.timer = undefined;
    for (;;) {
      while (q.waiters.length > 0 && q.waiters[0]!.gone) q.waiters.shift();
      const head = q.waiters[0];
      if (!head) return drop(q);
      const now = monotonic();
      const result = local.take(q.key, q.shape, now);
      if (!result.allowed) return schedule(q, now, result.retryAfterMs);
      q.waiters.shift();
      q.live--;
      budget.used--;
      head.gone = true;
      head.settle(result);
    }
  }

  const enqueue = (q: Queue): ThrottleAnswer => {
    let settle!: (result: TakeResult | 'gone') => void;
    const released = new Promise<TakeResult | 'gone'>((resolve) => (settle = resolve));
    const waiter: Waiter = { gone: false, settle };
    q.waiters.push(waiter);
    q.live++;
    budget.used++;
    const leave = (): void => {
      if (waiter.gone) return;
      waiter.gone = true;
      q.live--;
      budget.used--;
      if (q.live === 0) drop(q);
      // Left callers are skipped at release; compact when they outnumber the live ones, so churn cannot grow the array.
      else if (q.waiters.length > 2 * q.live + 8) q.waiters.splice(0, q.waiters.length, ...q.waiters.filter((w) => !w.gone));
      settle('gone');
    };
    return { kind: 'queued', released, leave };
  };

  return {
    take(key, shape, bounds, owner) {
      const now = monotonic();
      const q = queues.get(key);
      if (q === undefined) {
        const result = local.take(key, shape, now);
        if (result.allowed) return { kind: 'admitted', result };
        if (result.retryAfterMs > bounds.maxDelayMs) return { kind: 'shed', why: 'delay_exceeded', retryAfterMs: result.retryAfterMs };
        if (budget.used >= budget.max) return { kind: 'shed', why: 'queue_full', retryAfterMs: result.retryAfterMs };
        const created: Queue = { key, shape, owner, waiters: [], live: 0, dueAt: now, timer: undefined };
        queues.set(key, created);
        schedule(created, now, result.retryAfterMs);
        return enqueue(created);
      }
      // Behind every live caller: the head's token, then one interval each.
      const turnMs = Math.max(0, q.dueAt - now) + q.live * q.shape.intervalMs;
      if (q.live >= bounds.queue || budget.used >= budget.max) return { kind: 'shed', why: 'queue_full', retryAfterMs: turnMs };
      if (turnMs > bounds.maxDelayMs) return { kind: 'shed', why: 'delay_exceeded', retryAfterMs: turnMs };
      return enqueue(q);
    },
    get size() {
      return queues.size;
    },
    waiting(into) {
      for (const q of queues.values()) {
        const id = `${q.owner.policy}#${q.owner.rule}`;
        const entry = into.get(id);
        if (entry) entry.queued += q.live;
        else into.set(id, { owner: q.owner, queued: q.live });
      }
    },
  };
}
