import type { BodyRead, CallContext } from '../../core/call-context.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { Filter } from '../../core/filter.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import { matchPathOf } from '../../policy/call-match.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { FilterDeps, FilterKind } from '../filter-kind.ts';
import type { BodyFacts, CompiledValidationRule, ParsedJson, RuleFailure } from './validate-rules.ts';
import { bodyNeed, checkBody, checkHead, compileValidationRules, headerBytesOf, parseJsonBody } from './validate-rules.ts';

/** The counters the filter feeds (SidecarMetrics has them); labels come from policy documents only. */
interface ValidateMetrics {
  readonly validationDecisions: { inc(labels: { policy: string; rule: string; decision: 'passed' | 'failed' | 'shadow_failed' }): void };
  readonly shadowDenials: { inc(labels: { policy: string; rule: string }): void };
}

interface ValidateLogger {
  info(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface ValidateRuntimeDeps extends FilterDeps {
  /** limits.maxBodyBuffer: the most bytes of one body the filter holds in memory; 1 MiB when absent. */
  readonly maxBodyBuffer?: number;
  readonly metrics?: ValidateMetrics;
  /** Refusals and shadow failures are logged with their decision id; schemas ajv cannot compile, once per snapshot. */
  readonly logger?: ValidateLogger;
}

/** What outlives every snapshot's filter: created once per sidecar. */
export interface ValidateRuntime {
  readonly maxBodyBuffer: number;
  readonly nextDecisionId: () => string;
  readonly metrics: ValidateMetrics | undefined;
  readonly logger: ValidateLogger | undefined;
}

export function createValidateRuntime(deps: ValidateRuntimeDeps): ValidateRuntime {
  return { maxBodyBuffer: deps.maxBodyBuffer ?? 1_048_576, nextDecisionId: createDecisionIds(deps.random), metrics: deps.metrics, logger: deps.logger };
}

/** Per call: a header size computed at most once, a decision id made only when a rule fails. */
interface CallState {
  readonly call: CallContext;
  readonly body: BodyFacts;
  headerBytes: number | undefined;
  decisionId: string | undefined;
}

/**
 * Input validation from ValidationPolicy documents (checks: validate-rules.ts),
 * compiled once per snapshot. Every rule whose `match` holds must pass: head
 * checks run synchronously, in rule order; only when a matching rule needs the
 * body is it read (call.body, at most min(maxBodyBytes, maxBodyBuffer) bytes),
 * and the stack then forwards the bytes read. An enforcing rule's failure
 * refuses the call; a shadow rule's is recorded on the call, counted and logged.
 */
export function createValidateFilter(documents: readonly PolicyDocument[], runtime: ValidateRuntime): Filter {
  const { rules, index, problems } = compileValidationRules(documents);
  const { metrics, logger, maxBodyBuffer, nextDecisionId: nextId } = runtime;
  for (const problem of problems) {
    try {
      logger?.error({ rule: problem.rule, error: problem.error }, 'validation: JSON Schema does not compile; the rule refuses every call it matches (filter.error)');
    } catch {
      // Telemetry never breaks traffic (STYLE.md #8).
    }
  }
  if (rules.length === 0) return { name: 'validate', onRequest: () => CONTINUE };

  const count = (rule: CompiledValidationRule, decision: 'passed' | 'failed' | 'shadow_failed'): void => {
    try {
      metrics?.validationDecisions.inc({ policy: rule.policy, rule: rule.name, decision });
      if (decision === 'shadow_failed') metrics?.shadowDenials.inc({ policy: rule.policy, rule: rule.name });
    } catch {
      // A broken metric must not fail the call.
    }
  };

  /** A rule failed: the verdict that refuses the call, or undefined when the rule is in shadow mode. */
  const failed = (state: CallState, rule: CompiledValidationRule, failure: RuleFailure): Verdict | undefined => {
    const { call } = state;
    const decisionId = (state.decisionId ??= nextId());
    count(rule, rule.shadow ? 'shadow_failed' : 'failed');
    if (rule.shadow) (call.annotations.shadowDenials ??= []).push(rule.id);
    try {
      logger?.info(
        { decision_id: decisionId, rule: rule.id, code: failure.code, reason: failure.reason, shadow: rule.shadow, request_id: call.id, method: call.method, path: call.path },
        rule.shadow ? 'validation: shadow rule would refuse' : 'validation refused the call',
      );
    } catch {
      // A broken log sink must not fail the call.
    }
    if (rule.shadow) return undefined;
    call.annotations.decisionId = decisionId;
    // The rest of an oversized HTTP/1.1 body is still on the connection: close it rather than read it all.
    const headers = failure.code === 'validate.body_too_large' && call.httpVersion === '1.1' && call.body?.present ? { connection: 'close' } : undefined;
    return respond(failure.code, failure.reason, { rule: rule.id, decisionId, ...(headers ? { headers } : {}) });
  };

  const checkBodies = async (state: CallState, pending: readonly CompiledValidationRule[]): Promise<Verdict> => {
    const body = state.call.body;
    if (!body) {
      // A call built outside a stack cannot be read: refuse rather than skip an enforcing check.
      for (const rule of pending) {
        const verdict = failed(state, rule, { code: 'filter.error', reason: 'the request body cannot be read here' });
        if (verdict) return verdict;
      }
      return CONTINUE;
    }
    let limit = 0;
    for (const rule of pending) limit = Math.max(limit, bodyNeed(rule, state.call, state.body)!);
    const read: BodyRead = await body.read(limit);
    if (read.kind === 'failed') return respond(read.refused ?? (read.timedOut ? 'request.timeout' : 'request.cancelled'), read.reason);
    if (read.kind === 'over_budget') {
      // The check cannot be made now: an enforcing rule fails closed (retryable), shadow rules let it pass unchecked.
      if (pending.every((rule) => rule.shadow)) return CONTINUE;
      return respond('sidecar.overloaded', 'the sidecar holds as many request bodies as it may (limits.maxBufferedBodies); retry shortly', { headers: { 'retry-after': '1' } });
    }
    let parsed: ParsedJson | undefined;
    const json = (): ParsedJson => (parsed ??= parseJsonBody((read as Extract<BodyRead, { kind: 'complete' }>).bytes));
    for (const rule of pending) {
      const failure = checkBody(rule, read, state.body, json);
      if (!failure) {
        count(rule, 'passed');
        continue;
      }
      const verdict = failed(state, rule, failure);
      if (verdict) return verdict;
    }
    return CONTINUE;
  };

  return {
    name: 'validate',
    onRequest(call) {
      const matchPath = matchPathOf(call.path);
      let state: CallState | undefined;
      let pending: CompiledValidationRule[] | undefined;
      // Only the rules that could match a call are looked at; every one that matches applies, in rule order.
      for (const rule of index.matching(call.method, matchPath)) {
        state ??= {
          call,
          body: { present: call.body ? call.body.present : hasBodyHeaders(call), declaredLength: call.body?.declaredLength, bufferLimit: maxBodyBuffer },
          headerBytes: undefined,
          decisionId: undefined,
        };
        const s = state;
        const failure = checkHead(rule, call, s.body, () => (s.headerBytes ??= headerBytesOf(call.headers)));
        if (failure) {
          const verdict = failed(s, rule, failure);
          if (verdict) return verdict;
          continue;
        }
        if (bodyNeed(rule, call, s.body) === undefined) count(rule, 'passed');
        else (pending ??= []).push(rule);
      }
      return state && pending ? checkBodies(state, pending) : CONTINUE;
    },
  };
}

/** Input validation: last, since it may read and buffer the body (only when a matching rule needs it). */
export const validateKind: FilterKind<ValidateRuntime> = { name: 'validate', compile: createValidateFilter };

/** Without a body accessor, what the head says: a Content-Length above 0, or chunked. */
function hasBodyHeaders(call: CallContext): boolean {
  const length = call.headers['content-length'];
  return call.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
