import type { CallContext } from '../../core/call-context.ts';
import type { Filter } from '../../core/filter.ts';
import { createLogGate } from '../../core/log-gate.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import { compileCallMatch, matchPathOf } from '../../policy/call-match.ts';
import type { CallMatchEntry } from '../../policy/call-match-index.ts';
import { createCallMatchIndex } from '../../policy/call-match-index.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import { createClientAddressResolver } from '../../proxy/client-address.ts';
import type { FilterKind } from '../filter-kind.ts';
import type { ClientAddress } from './bucket-key.ts';
import { compileKey, globalBucketKey, localBucketKey } from './bucket-key.ts';
import type { BucketShape } from './gcra.ts';
import { bucketShape } from './gcra.ts';
import { createQueuedEvaluation } from './queued-rules.ts';
import { policyItem, refusedItem, serviceLimitItem } from './ratelimit-headers.ts';
import type { CompiledRule, RuleOutcome } from './ratelimit-rule.ts';
import { REFUSING } from './ratelimit-rule.ts';
import type { RateLimitDecision, RateLimitRuntime } from './ratelimit-runtime.ts';

/*
 * RateLimitPolicy enforcement, after authz (a denied caller spends no budget).
 * Every rule whose match holds takes one token from its caller's bucket; the
 * call is refused (429 ratelimit.exceeded) when an enforcing bucket is empty.
 * Local rules are counted in memory and answer synchronously; global ones
 * only when a local rule has not refused the call already, in Redis, all at
 * once. Shadow rules take tokens from their own buckets and never refuse.
 * The RateLimit fields (ratelimit-headers.ts) go on refusals and, unless a
 * rule says otherwise, on admitted calls, so a client can slow down first.
 */

/** Every rule of the snapshot's RateLimitPolicy documents, in document and rule order, with its `match` block for the index. */
function compileRules(documents: readonly PolicyDocument[]): CallMatchEntry<CompiledRule>[] {
  const rules: CallMatchEntry<CompiledRule>[] = [];
  for (const doc of documents) {
    if (!isKind(doc, 'RateLimitPolicy')) continue;
    const spec = doc.spec;
    const policy = `${doc.metadata.namespace}/${doc.metadata.name}`;
    const clientAddress = clientAddressOf(spec.trustedProxies);
    spec.rules.forEach((rule) => {
      // A concurrency rule has no limit (validated): a one-token shape nothing takes from.
      const limit = rule.limit ?? { requests: 1, per: 1000 };
      const shape = bucketShape(limit, rule.burst);
      const id = `${policy}#${rule.name}`;
      const match = compileCallMatch(rule.match);
      const concurrency = rule.concurrency;
      const compiled: CompiledRule = {
        id,
        policy,
        name: rule.name,
        owner: { policy, rule: rule.name },
        shadow: spec.mode === 'shadow',
        global: rule.scope === 'global',
        failureMode: rule.failureMode ?? 'deny',
        localFallback: rule.localFallback ?? 'split',
        // Without a key, a concurrency rule is one limit for every call it matches (per route).
        key: rule.key ? compileKey(rule.key, clientAddress) : () => '',
        shape,
        bucketPrefix: `${id}@${Math.round(shape.intervalMs * 1000)}/${shape.burst}`,
        policyItem: policyItem(rule.name, limit, shape.burst),
        headers: spec.mode === 'shadow' || concurrency ? 'none' : (rule.responseHeaders ?? 'all'),
        throttle: rule.throttle ? { queue: rule.throttle.queue, maxDelayMs: rule.throttle.maxDelay } : undefined,
        concurrency: concurrency ? { max: concurrency.max, queue: concurrency.queue, maxWaitMs: concurrency.maxWait ?? 0 } : undefined,
      };
      rules.push({ rule: compiled, match, spec: rule.match });
    });
  }
  return rules;
}

/**
 * This replica's share of a bucket while Redis is away: the rate divided by
 * the replicas (the interval multiplied), the burst too, at least one call.
 * The bucket keeps its key: a change in the replica count reshapes it rather
 * than handing every caller a full one.
 */
function splitShape(shape: BucketShape, replicas: number): BucketShape {
  return { intervalMs: shape.intervalMs * replicas, burst: Math.max(1, Math.floor(shape.burst / replicas)) };
}

/** source.ip through the document's trusted proxies; undefined (the connection address) without any. */
function clientAddressOf(trustedProxies: readonly string[] | undefined): ClientAddress | undefined {
  if (!trustedProxies || trustedProxies.length === 0) return undefined;
  const resolve = createClientAddressResolver(trustedProxies);
  return (call) => resolve(call.source.address, call.headers)?.address;
}

export function createRateLimitFilter(documents: readonly PolicyDocument[], runtime: RateLimitRuntime): Filter {
  const entries = compileRules(documents);
  if (entries.length === 0) return { name: 'ratelimit', onRequest: () => CONTINUE };
  // Only the rules that could match a call are looked at; every one that matches counts, in rule order.
  const rules = createCallMatchIndex(entries);
  const { local, store, clock, metrics } = runtime;
  const nextId = runtime.nextDecisionId;
  const log = throttledLog(runtime, clock);

  // With several worker processes, each has its own buckets: each takes its share of a local limit, so the pod
  // as a whole never admits more than the rule says (a caller held to one worker gets only that share).
  const workers = Math.max(1, Math.floor(runtime.workers));
  const localShape = (rule: CompiledRule): BucketShape => (workers === 1 ? rule.shape : splitShape(rule.shape, workers));
  const takeLocal = (rule: CompiledRule, value: string, decisionIfAllowed: RateLimitDecision, decisionIfLimited: RateLimitDecision, shape = localShape(rule)): RuleOutcome => {
    const result = local.take(localBucketKey(rule.bucketPrefix, value), shape, clock.monotonic());
    return { rule, result, decision: result.allowed ? decisionIfAllowed : decisionIfLimited };
  };
  const fallbackShape = (rule: CompiledRule): BucketShape => {
    const replicas = (rule.localFallback === 'split' ? Math.max(1, Math.floor(runtime.replicas())) : 1) * workers;
    return replicas === 1 ? rule.shape : splitShape(rule.shape, replicas);
  };

  const takeGlobal = async (rule: CompiledRule, value: string): Promise<RuleOutcome> => {
    const result = store ? await store.take(globalBucketKey(rule.bucketPrefix, value), rule.shape) : undefined;
    if (result) return { rule, result, decision: result.allowed ? 'allowed' : rule.shadow ? 'shadow_limited' : 'limited' };
    if (rule.failureMode === 'local') return takeLocal(rule, value, 'fallback_allowed', rule.shadow ? 'shadow_limited' : 'fallback_limited', fallbackShape(rule));
    return { rule, result: undefined, decision: rule.failureMode === 'allow' || rule.shadow ? 'unavailable_allowed' : 'unavailable_denied' };
  };

  const conclude = (call: CallContext, outcomes: readonly RuleOutcome[]): Verdict => {
    let refusal: RuleOutcome | undefined;
    let retryAfterMs = 0;
    let shadowLimited = false;
    let delayed = false;
    for (const outcome of outcomes) {
      const { rule, decision } = outcome;
      try {
        metrics?.rateLimitDecisions.inc({ policy: rule.policy, rule: rule.name, decision });
      } catch {
        // A broken metric sink must not fail the call.
      }
      if (decision === 'shadow_limited') {
        shadowLimited = true;
        (call.annotations.shadowDenials ??= []).push(rule.id);
        try {
          metrics?.shadowDenials.inc({ policy: rule.policy, rule: rule.name });
        } catch {
          // as above
        }
        log(rule, call, 'rate limit: shadow rule would refuse');
      } else if (decision === 'delayed') {
        delayed = true;
      } else if (REFUSING.has(decision)) {
        // The first refusing rule names the refusal; Retry-After waits for every empty bucket.
        refusal ??= outcome;
        retryAfterMs = Math.max(retryAfterMs, outcome.result?.retryAfterMs ?? 1000);
      }
    }
    if (!refusal) {
      call.annotations.rateLimit = shadowLimited ? 'shadow_limited' : delayed ? 'delayed' : 'allowed';
      const fields = rateLimitFields(outcomes, false);
      if (fields) call.annotations.responseHeaders = { ...call.annotations.responseHeaders, ...fields };
      return CONTINUE;
    }
    call.annotations.rateLimit = refusal.decision;
    if (refusal.decision === 'cancelled') return respond('request.cancelled', 'the caller went away while its call waited in a queue');
    const decisionId = (call.annotations.decisionId ??= nextId());
    const retryAfter = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
    const headers = { 'retry-after': retryAfter, ...rateLimitFields(outcomes, true) };
    const rule = refusal.rule;
    const extra = { rule: rule.id, decisionId, headers };
    switch (refusal.decision) {
      case 'unavailable_denied':
        return respond('ratelimit.unavailable', 'the rate-limit counter store did not answer; the call fails closed', extra);
      case 'throttle_queue_full':
        log(rule, call, 'rate limited: throttle queue full');
        return respond('ratelimit.throttle_queue_full', `rate limit ${rule.name} exceeded and its queue is full; retry after ${retryAfter} s`, extra);
      case 'throttle_delay_exceeded':
        log(rule, call, 'rate limited: throttle delay exceeded');
        return respond('ratelimit.throttle_delay_exceeded', `rate limit ${rule.name} exceeded; the wait would be longer than its maxDelay; retry after ${retryAfter} s`, extra);
      case 'concurrency_exceeded':
        log(rule, call, 'concurrency limit: refused');
        return respond('ratelimit.concurrency_exceeded', `concurrency limit ${rule.name}: too many calls in flight; retry after ${retryAfter} s`, extra);
      case 'concurrency_timeout':
        log(rule, call, 'concurrency limit: waited too long');
        return respond('ratelimit.concurrency_timeout', `concurrency limit ${rule.name}: no call finished within its maxWait; retry after ${retryAfter} s`, extra);
      default:
        log(rule, call, 'rate limited');
        return respond('ratelimit.exceeded', `rate limit ${rule.name} exceeded; retry after ${retryAfter} s`, extra);
    }
  };

  if (entries.some((e) => e.rule.throttle || e.rule.concurrency)) {
    const evaluate = createQueuedEvaluation({ runtime, localShape, takeLocal, takeGlobal, conclude });
    return { name: 'ratelimit', queues: true, onRequest: (call) => evaluate(call, rules.matching(call.method, matchPathOf(call.path))) };
  }

  return {
    name: 'ratelimit',
    onRequest(call) {
      const matchPath = matchPathOf(call.path);
      let outcomes: RuleOutcome[] | undefined; // made only when a rule matches: most calls match none
      let global: { rule: CompiledRule; value: string }[] | undefined;
      let locallyRefused = false;
      for (const rule of rules.matching(call.method, matchPath)) {
        const value = rule.key(call);
        if (rule.global) {
          (global ??= []).push({ rule, value });
          continue;
        }
        const outcome = takeLocal(rule, value, 'allowed', rule.shadow ? 'shadow_limited' : 'limited');
        (outcomes ??= []).push(outcome);
        if (outcome.decision === 'limited') locallyRefused = true;
      }
      // Refused here already: Redis is not asked, so a flood of refused calls costs it nothing.
      if (!global || locallyRefused) return outcomes ? conclude(call, outcomes) : CONTINUE;
      const counted = outcomes ?? [];
      return Promise.all(global.map(({ rule, value }) => takeGlobal(rule, value))).then((results) => conclude(call, counted.concat(results)));
    },
  };
}

/** Rate limiting: after authz, so denied callers spend no budget. */
export const rateLimitKind: FilterKind<RateLimitRuntime> = { name: 'ratelimit', compile: createRateLimitFilter };

/**
 * The RateLimit-Policy and RateLimit fields for the rules that counted this
 * call and send them on it; undefined when none does. A rule Redis could not
 * count under failureMode deny admits nothing until Redis answers: r=0, t=1.
 */
function rateLimitFields(outcomes: readonly RuleOutcome[], refused: boolean): Record<string, string> | undefined {
  let policy: string | undefined;
  let limit: string | undefined;
  for (const { rule, result, decision } of outcomes) {
    if (rule.headers === 'none' || (rule.headers === 'refusals' && !refused)) continue;
    const item = result ? serviceLimitItem(rule.name, result, rule.shape) : decision === 'unavailable_denied' ? refusedItem(rule.name, 1) : undefined;
    if (item === undefined) continue; // admitted uncounted (failureMode allow): nothing true to say
    policy = policy === undefined ? rule.policyItem : `${policy}, ${rule.policyItem}`;
    limit = limit === undefined ? item : `${limit}, ${item}`;
  }
  return policy === undefined ? undefined : { 'ratelimit-policy': policy, ratelimit: limit! };
}

/** One log line per rule per second at most; the lines in between are counted in the next one. */
function throttledLog(runtime: RateLimitRuntime, clock: RateLimitRuntime['clock']): (rule: CompiledRule, call: CallContext, message: string) => void {
  const logger = runtime.logger;
  if (!logger) return () => {};
  const gate = createLogGate(clock, 1000);
  return (rule, call, message) => {
    const suppressed = gate.pass(rule.id);
    if (suppressed === undefined) return;
    try {
      logger.info(
        {
          decision_id: call.annotations.decisionId,
          rule: rule.id,
          request_id: call.id,
          method: call.method,
          path: call.path,
          source_principal: call.source.principal,
          source_address: call.source.address,
          request_principal: call.annotations.auth?.principal,
          ...(suppressed > 0 ? { suppressed } : {}),
        },
        message,
      );
    } catch {
      // A broken log sink must not fail the call.
    }
  };
}
