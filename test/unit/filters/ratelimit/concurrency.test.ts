import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { Filter } from '../../../../src/core/filter.ts';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createLocalBuckets } from '../../../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitFilter } from '../../../../src/filters/ratelimit/ratelimit-filter.ts';
import { createRateLimitRuntime } from '../../../../src/filters/ratelimit/ratelimit-runtime.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { ADMIN, call, FRONTEND } from '../authz-fixtures.ts';

/*
 * Concurrency rules: slots held from admission until the inbound stack calls
 * CallAnnotations.onCallEnd (done here by hand), a FIFO queue with a deadline,
 * then 503. Fake timers for maxWait.
 */

const validator = createPolicyValidator();

function validate(rules: Record<string, unknown>[], extra: Record<string, unknown> = {}) {
  return validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'RateLimitPolicy', metadata: { name: 'limits', namespace: 'shop' }, spec: { rules, ...extra } }, { file: 'limits.yaml', index: 0 });
}

function policy(rules: Record<string, unknown>[], extra: Record<string, unknown> = {}): PolicyDocument {
  const result = validate(rules, extra);
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
  return result.document.document;
}

function setup(doc: PolicyDocument, workers = 1) {
  const counts: Record<string, number> = {};
  const runtime = createRateLimitRuntime({
    local: createLocalBuckets(1000),
    clock: { now: () => Date.now(), monotonic: () => Date.now() },
    random: () => 0.5,
    metrics: {
      rateLimitDecisions: { inc: ({ rule, decision }) => void (counts[`${rule}:${decision}`] = (counts[`${rule}:${decision}`] ?? 0) + 1) },
      shadowDenials: { inc: () => {} },
    },
    workers,
  });
  return { filter: createRateLimitFilter([doc], runtime), counts, runtime };
}

function send(filter: Filter, n: number, principal = FRONTEND, path = '/orders/1') {
  const calls: CallContext[] = [];
  const answered: string[] = [];
  for (let i = 0; i < n; i++) {
    const c = call({ principal, path });
    calls.push(c);
    const note = (v: Verdict): void => void answered.push(`${i}:${v.kind === 'continue' ? 'ok' : v.code}`);
    const v = filter.onRequest(c);
    if (v instanceof Promise) void v.then(note);
    else note(v);
  }
  return { calls, answered };
}

const perCaller = (concurrency: Record<string, unknown>) => policy([{ name: 'in-flight', key: ['source.principal'], concurrency }]);

describe('rate-limit concurrency rules', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('admits max calls, queues up to the bound, refuses the rest with 503 concurrency_exceeded, and lets the queued in as calls end', async () => {
    const { filter, counts, runtime } = setup(perCaller({ max: 2, queue: 2, maxWait: '5s' }));
    const { calls, answered } = send(filter, 6);
    await vi.advanceTimersByTimeAsync(0);
    expect(answered).toEqual(['0:ok', '1:ok', '4:ratelimit.concurrency_exceeded', '5:ratelimit.concurrency_exceeded']);
    expect(runtime.usage().get('shop/limits#in-flight')).toMatchObject({ inFlight: 2, queued: 2 });
    calls[1]!.annotations.onCallEnd!();
    await vi.advanceTimersByTimeAsync(0);
    expect(answered.slice(4)).toEqual(['2:ok']); // first come, first in
    calls[0]!.annotations.onCallEnd!();
    await vi.advanceTimersByTimeAsync(0);
    expect(answered.slice(4)).toEqual(['2:ok', '3:ok']);
    expect(counts).toEqual({ 'in-flight:allowed': 2, 'in-flight:delayed': 2, 'in-flight:concurrency_exceeded': 2 });
    for (const c of calls.slice(2, 4)) c.annotations.onCallEnd!();
    expect(runtime.concurrency.size).toBe(0); // nothing in flight: no entry left
  });

  it('answers the refusal with 503, retry-after and the rule, and no RateLimit fields', () => {
    const { filter } = setup(perCaller({ max: 1 }));
    send(filter, 1);
    expect(filter.onRequest(call({ principal: FRONTEND }))).toEqual({
      kind: 'respond',
      code: 'ratelimit.concurrency_exceeded',
      reason: expect.stringContaining('in-flight'),
      rule: 'shop/limits#in-flight',
      decisionId: expect.any(String),
      headers: { 'retry-after': '1' },
    });
  });

  it('releases a slot exactly once, however often the end is reported', async () => {
    const { filter } = setup(perCaller({ max: 1 }));
    const first = send(filter, 1);
    first.calls[0]!.annotations.onCallEnd!();
    first.calls[0]!.annotations.onCallEnd!();
    const next = send(filter, 2);
    expect(next.answered).toEqual(['0:ok', '1:ratelimit.concurrency_exceeded']);
  });

  it('gives up on a queued call after maxWait with 503 concurrency_timeout', async () => {
    const { filter, runtime } = setup(perCaller({ max: 1, queue: 1, maxWait: '300ms' }));
    const { answered } = send(filter, 2);
    await vi.advanceTimersByTimeAsync(299);
    expect(answered).toEqual(['0:ok']);
    await vi.advanceTimersByTimeAsync(1);
    expect(answered).toEqual(['0:ok', '1:ratelimit.concurrency_timeout']);
    expect(runtime.usage().get('shop/limits#in-flight')).toMatchObject({ inFlight: 1, queued: 0 });
  });

  it('takes a caller that leaves out of the queue without giving it a slot', async () => {
    const { filter } = setup(perCaller({ max: 1, queue: 2, maxWait: '5s' }));
    const { calls, answered } = send(filter, 3);
    calls[1]!.annotations.onCallerGone!();
    await vi.advanceTimersByTimeAsync(0);
    expect(answered).toEqual(['0:ok', '1:request.cancelled']);
    calls[0]!.annotations.onCallEnd!();
    await vi.advanceTimersByTimeAsync(0);
    expect(answered).toEqual(['0:ok', '1:request.cancelled', '2:ok']);
    expect(calls[1]!.annotations.onCallEnd).toBeUndefined(); // it held nothing
  });

  it('after many calls that end or leave, the limit still admits exactly max', async () => {
    const { filter, runtime } = setup(perCaller({ max: 3, queue: 3, maxWait: '5s' }));
    for (let round = 0; round < 50; round++) {
      const { calls } = send(filter, 6);
      calls[4]!.annotations.onCallerGone!(); // left while queued
      for (const c of calls) c.annotations.onCallEnd?.(); // ended (response, error, abort: the stack reports each once)
      await vi.advanceTimersByTimeAsync(0);
      for (const c of calls) c.annotations.onCallEnd?.();
    }
    expect(runtime.concurrency.size).toBe(0);
    const { answered } = send(filter, 4);
    expect(answered).toEqual(['0:ok', '1:ok', '2:ok']);
  });

  it('counts per key: each caller has its own limit; without a key one limit covers every matching call', async () => {
    const keyed = setup(perCaller({ max: 1 }));
    expect(send(keyed.filter, 1, FRONTEND).answered).toEqual(['0:ok']);
    expect(send(keyed.filter, 1, ADMIN).answered).toEqual(['0:ok']);
    const route = setup(policy([{ name: 'slow-report', match: { paths: ['/reports/*'] }, concurrency: { max: 1 } }]));
    expect(send(route.filter, 1, FRONTEND, '/reports/1').answered).toEqual(['0:ok']);
    expect(send(route.filter, 1, ADMIN, '/reports/2').answered).toEqual(['0:ratelimit.concurrency_exceeded']);
    expect(send(route.filter, 1, ADMIN, '/orders/1').answered).toEqual(['0:ok']); // not on the route
  });

  it('with several workers, each takes its share of max (at least one)', () => {
    const { filter } = setup(perCaller({ max: 4 }), 2);
    expect(send(filter, 3).answered).toEqual(['0:ok', '1:ok', '2:ratelimit.concurrency_exceeded']);
  });

  it('a shadow rule admits every call and counts the ones it would have refused', () => {
    const { filter, counts } = setup(policy([{ name: 'in-flight', key: ['source.principal'], concurrency: { max: 1 } }], { mode: 'shadow' }));
    const { calls, answered } = send(filter, 2);
    expect(answered).toEqual(['0:ok', '1:ok']);
    expect(calls[1]!.annotations.shadowDenials).toEqual(['shop/limits#in-flight']);
    expect(counts).toEqual({ 'in-flight:allowed': 1, 'in-flight:shadow_limited': 1 });
  });

  it('releases a slot taken before a later rule refused the call, when the stack reports the refusal', async () => {
    const { filter, runtime } = setup(
      policy([
        { name: 'in-flight', key: ['source.principal'], concurrency: { max: 1 } },
        { name: 'rate', key: ['source.principal'], limit: { requests: 1, per: '1h' } },
      ]),
    );
    const first = send(filter, 1);
    expect(first.answered).toEqual(['0:ok']);
    first.calls[0]!.annotations.onCallEnd!();
    const second = send(filter, 1);
    expect(second.answered).toEqual(['0:ratelimit.exceeded']); // it took the slot, then the rate rule refused
    second.calls[0]!.annotations.onCallEnd!(); // the inbound stack's refusal path
    expect(runtime.concurrency.size).toBe(0);
    expect(send(filter, 1).answered).toEqual(['0:ratelimit.exceeded']); // the rate rule again, not the slot
  });

  it.each([
    [{ name: 'r', concurrency: { max: 1, queue: 2 } }, 'spec.rules[0].concurrency.maxWait', 'required with a queue'],
    [{ name: 'r', concurrency: { max: 1 }, burst: 3 }, 'spec.rules[0].burst', 'does not apply to a concurrency rule'],
    [{ name: 'r', concurrency: { max: 1 }, limit: { requests: 1, per: '1s' }, key: ['source.ip'] }, 'spec.rules[0].concurrency', 'limit or concurrency, not both'],
    [{ name: 'r', key: ['source.ip'] }, 'spec.rules[0].limit', 'needs limit'],
    [{ name: 'r', limit: { requests: 1, per: '1s' } }, 'spec.rules[0].key', 'required with limit'],
    [{ name: 'r', concurrency: { max: 1 }, scope: 'global' }, 'spec.rules[0].scope', 'scope global does not apply'],
  ])('refuses a malformed rule at validation (%j)', (rule, field, reason) => {
    const result = validate([rule]);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors).toContainEqual(expect.objectContaining({ field, reason: expect.stringContaining(reason) }));
  });
});
