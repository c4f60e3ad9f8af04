import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { Filter } from '../../../../src/core/filter.ts';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createLocalBuckets } from '../../../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitFilter } from '../../../../src/filters/ratelimit/ratelimit-filter.ts';
import { createRateLimitRuntime } from '../../../../src/filters/ratelimit/ratelimit-runtime.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { call, FRONTEND } from '../authz-fixtures.ts';

/*
 * Throttling (RateLimitPolicy rules with `throttle`) on a fake clock: the
 * queue's timer is vitest's, the buckets read Date.now(), which vitest moves
 * with it.
 */

const validator = createPolicyValidator();

function validate(spec: Record<string, unknown>) {
  return validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'RateLimitPolicy', metadata: { name: 'limits', namespace: 'shop' }, spec }, { file: 'limits.yaml', index: 0 });
}

function policy(spec: Record<string, unknown>): PolicyDocument {
  const result = validate(spec);
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
  return result.document.document;
}

/** 10 calls a second (one per 100 ms), one at once, the rest queued. */
const throttled = (throttle: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  policy({ rules: [{ name: 'per-caller', key: ['source.principal'], limit: { requests: 10, per: '1s' }, burst: 1, throttle, ...extra }] });

function setup(doc: PolicyDocument, opts: { maxQueuedCalls?: number; workers?: number } = {}) {
  const counts: Record<string, number> = {};
  const clock = { now: () => Date.now(), monotonic: () => Date.now() };
  const runtime = createRateLimitRuntime({
    local: createLocalBuckets(1000),
    clock,
    random: () => 0.5,
    metrics: {
      rateLimitDecisions: { inc: ({ rule, decision }) => void (counts[`${rule}:${decision}`] = (counts[`${rule}:${decision}`] ?? 0) + 1) },
      shadowDenials: { inc: () => {} },
    },
    ...opts,
  });
  return { filter: createRateLimitFilter([doc], runtime), counts, runtime };
}

/** Sends calls and records, in order, which ones were answered and how. */
function burst(filter: Filter, n: number, principal = FRONTEND) {
  const calls: CallContext[] = [];
  const answered: string[] = [];
  const verdicts: (Verdict | undefined)[] = [];
  for (let i = 0; i < n; i++) {
    const c = call({ principal });
    calls.push(c);
    const v = filter.onRequest(c);
    const note = (verdict: Verdict): void => {
      verdicts[i] = verdict;
      answered.push(`${i}:${verdict.kind === 'continue' ? 'ok' : verdict.code}`);
    };
    if (v instanceof Promise) void v.then(note);
    else note(v);
  }
  return { calls, answered, verdicts };
}

describe('rate-limit throttling', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('delays callers over the rate, releases them in arrival order at the rate, and sheds the one past the queue bound with 429', async () => {
    const { filter, counts } = setup(throttled({ queue: 3, maxDelay: '5s' }));
    const { answered, verdicts } = burst(filter, 5);
    await vi.advanceTimersByTimeAsync(0);
    // The first has the token; three wait; the fifth finds the queue full.
    expect(answered).toEqual(['0:ok', '4:ratelimit.throttle_queue_full']);
    expect(verdicts[4]).toMatchObject({ kind: 'respond', code: 'ratelimit.throttle_queue_full', rule: 'shop/limits#per-caller', headers: { 'retry-after': '1' } });
    await vi.advanceTimersByTimeAsync(99);
    expect(answered).toHaveLength(2); // nothing before the next token
    await vi.advanceTimersByTimeAsync(1);
    expect(answered.slice(2)).toEqual(['1:ok']);
    await vi.advanceTimersByTimeAsync(100);
    expect(answered.slice(2)).toEqual(['1:ok', '2:ok']);
    await vi.advanceTimersByTimeAsync(100);
    expect(answered.slice(2)).toEqual(['1:ok', '2:ok', '3:ok']);
    expect(counts).toEqual({ 'per-caller:allowed': 1, 'per-caller:delayed': 3, 'per-caller:throttle_queue_full': 1 });
  });

  it('refuses at once (429 throttle_delay_exceeded) a caller whose turn would come after maxDelay, and admits it again once the queue drained', async () => {
    const { filter } = setup(throttled({ queue: 10, maxDelay: '250ms' }));
    const { answered, verdicts } = burst(filter, 4);
    await vi.advanceTimersByTimeAsync(0);
    // Turns at 100 and 200 ms fit in 250 ms; the third queued one would wait 300 ms.
    expect(answered).toEqual(['0:ok', '3:ratelimit.throttle_delay_exceeded']);
    expect(verdicts[3]).toMatchObject({ code: 'ratelimit.throttle_delay_exceeded', headers: { 'retry-after': '1' } });
    await vi.advanceTimersByTimeAsync(200);
    expect(answered).toEqual(['0:ok', '3:ratelimit.throttle_delay_exceeded', '1:ok', '2:ok']);
    await vi.advanceTimersByTimeAsync(100);
    expect(filter.onRequest(call({ principal: FRONTEND }))).toEqual({ kind: 'continue' });
  });

  it('takes a caller that leaves out of the queue: it gets request.cancelled and the next caller gets its release slot', async () => {
    const { filter, counts, runtime } = setup(throttled({ queue: 3, maxDelay: '5s' }));
    const { calls, answered } = burst(filter, 4);
    await vi.advanceTimersByTimeAsync(0);
    calls[2]!.annotations.onCallerGone?.(); // what the inbound stack does when the caller closes or resets
    await vi.advanceTimersByTimeAsync(0);
    expect(answered).toEqual(['0:ok', '2:request.cancelled']);
    await vi.advanceTimersByTimeAsync(100);
    expect(answered.slice(2)).toEqual(['1:ok']);
    await vi.advanceTimersByTimeAsync(100); // call 3 now, not at 300 ms: the one that left took no token
    expect(answered.slice(2)).toEqual(['1:ok', '3:ok']);
    expect(counts['per-caller:cancelled']).toBe(1);
    expect(runtime.throttle.size).toBe(0); // an empty queue is dropped
  });

  it('does not queue a caller that already left while earlier filters ran', async () => {
    const { filter } = setup(throttled({ queue: 3, maxDelay: '5s' }));
    expect(filter.onRequest(call({ principal: FRONTEND }))).toEqual({ kind: 'continue' });
    const gone = call({ principal: FRONTEND });
    gone.annotations.callerGone = true;
    expect(await filter.onRequest(gone)).toMatchObject({ code: 'request.cancelled' });
  });

  it('keeps one queue per bucket: another caller is not held behind a busy one', async () => {
    const { filter } = setup(throttled({ queue: 3, maxDelay: '5s' }));
    const busy = burst(filter, 3);
    const other = burst(filter, 1, 'spiffe://cluster.local/ns/shop/sa/other');
    await vi.advanceTimersByTimeAsync(0);
    expect(busy.answered).toEqual(['0:ok']);
    expect(other.answered).toEqual(['0:ok']);
  });

  it('bounds all queues together by rateLimit.maxQueuedCalls', async () => {
    const { filter } = setup(throttled({ queue: 10, maxDelay: '5s' }), { maxQueuedCalls: 2 });
    const a = burst(filter, 3, 'spiffe://cluster.local/ns/shop/sa/a'); // one admitted, two waiting: the budget
    const b = burst(filter, 2, 'spiffe://cluster.local/ns/shop/sa/b');
    await vi.advanceTimersByTimeAsync(0);
    expect(a.answered).toEqual(['0:ok']);
    expect(b.answered).toEqual(['0:ok', '1:ratelimit.throttle_queue_full']);
  });

  it('a shadow throttle rule never makes a caller wait', async () => {
    const { filter } = setup(
      policy({ mode: 'shadow', rules: [{ name: 'per-caller', key: ['source.principal'], limit: { requests: 10, per: '1s' }, burst: 1, throttle: { queue: 3, maxDelay: '1s' } }] }),
    );
    const { answered } = burst(filter, 3);
    expect(answered).toEqual(['0:ok', '1:ok', '2:ok']);
  });

  it('refuses throttle on a global rule at validation, naming the field', () => {
    const result = validate({ rules: [{ name: 'shared', key: ['source.principal'], limit: { requests: 10, per: '1s' }, scope: 'global', throttle: { queue: 3, maxDelay: '1s' } }] });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual([
      expect.objectContaining({ source: { file: 'limits.yaml', index: 0 }, field: 'spec.rules[0].throttle', reason: expect.stringContaining('only applies to scope: local') }),
    ]);
  });
});
