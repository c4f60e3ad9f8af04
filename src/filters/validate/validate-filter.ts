import type { BodyRead, CallContext } from '../../core/call-context.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { Filter } from '../../core/filter.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import { matchPathOf } from '../../policy/call-match.ts';
import type { JsonSchemaCompiler } from '../../policy/json-schema.ts';
import { createJsonSchemaCompiler } from '../../policy/json-schema.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { FilterDeps, FilterKind } from '../filter-kind.ts';
import { InjectionScan, injectionFailure } from './injection.ts';
import { loosestLimits } from './safe-json.ts';
import type { BodyFacts, CompiledValidationRule, RuleFailure } from './validate-rules.ts';
import { bodyForm, bodyNeed, CallBody, checkBodySize, checkHead, checkJson, checkSchema, compileValidationRules, headerBytesOf, readsJson } from './validate-rules.ts';

type Decision = 'passed' | 'failed' | 'shadow_failed' | 'logged';

/** The counters the filter feeds (SidecarMetrics has them); labels come from policy documents only. */
interface ValidateMetrics {
  readonly validationDecisions: { inc(labels: { policy: string; rule: string; decision: Decision }): void };
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
  /**
   * Compiles each snapshot's JSON Schemas; one of its own by default. The sidecar passes the compiler its
   * policy validator uses, so each schema the validator just compiled is not compiled again (json-schema.ts).
   */
  readonly schemaCompiler?: JsonSchemaCompiler;
}

/** What outlives every snapshot's filter: created once per sidecar. */
export interface ValidateRuntime {
  readonly maxBodyBuffer: number;
  readonly nextDecisionId: () => string;
  readonly metrics: ValidateMetrics | undefined;
  readonly logger: ValidateLogger | undefined;
  readonly schemaCompiler: JsonSchemaCompiler;
}

export function createValidateRuntime(deps: ValidateRuntimeDeps): ValidateRuntime {
  return {
    maxBodyBuffer: deps.maxBodyBuffer ?? 1_048_576,
    nextDecisionId: createDecisionIds(deps.random),
    metrics: deps.metrics,
    logger: deps.logger,
    schemaCompiler: deps.schemaCompiler ?? createJsonSchemaCompiler(),
  };
}

/** Per call: a header size computed at most once, a decision id made only when a rule fails. */
interface CallState {
  readonly call: CallContext;
  readonly body: BodyFacts;
  headerBytes: number | undefined;
  decisionId: string | undefined;
}

/**
 * One matching rule on one call: its injection scan (head, then body), and
 * what a check with its own mode found (injection `log` or `shadow`), which
 * decides the rule's count when nothing refuses.
 */
interface RuleRun {
  readonly rule: CompiledValidationRule;
  scan: InjectionScan | undefined;
  soft: 'logged' | 'shadow_failed' | undefined;
}

/**
 * Input validation from ValidationPolicy documents (checks: validate-rules.ts),
 * compiled once per snapshot. Every rule whose `match` holds must pass: head
 * checks (and injection detection on the path, query and headers) run
 * synchronously, in rule order; only when a matching rule needs the body is it
 * read (call.body, at most min(maxBodyBytes, maxBodyBuffer) bytes), and the
 * stack then forwards the bytes read. An enforcing rule's failure refuses the
 * call; a shadow rule's is recorded on the call, counted and logged; an
 * injection finding in `log` mode is logged only.
 */
export function createValidateFilter(documents: readonly PolicyDocument[], runtime: ValidateRuntime): Filter {
  const { rules, index, problems } = compileValidationRules(documents, runtime.schemaCompiler);
  const { metrics, logger, maxBodyBuffer, nextDecisionId: nextId } = runtime;
  for (const problem of problems) {
    try {
      logger?.error({ rule: problem.rule, error: problem.error }, 'validation: JSON Schema does not compile; the rule refuses every call it matches (filter.error)');
    } catch {
      // Telemetry never breaks traffic (STYLE.md #8).
    }
  }
  if (rules.length === 0) return { name: 'validate', onRequest: () => CONTINUE };

  /** One decision per rule evaluated; a shadow failure also in meshgate_shadow_denials_total, unless a shadow check counted it already. */
  const count = (rule: CompiledValidationRule, decision: Decision, shadowCounted = false): void => {
    try {
      metrics?.validationDecisions.inc({ policy: rule.policy, rule: rule.name, decision });
      if (decision === 'shadow_failed' && !shadowCounted) metrics?.shadowDenials.inc({ policy: rule.policy, rule: rule.name });
    } catch {
      // A broken metric must not fail the call.
    }
  };

  /** A rule that raised no refusal: counted once, as passed or as what a soft check found. */
  const settle = (run: RuleRun): void => count(run.rule, run.soft ?? 'passed', run.soft === 'shadow_failed');

  /**
   * A check failed: the verdict that refuses the call, or undefined when it
   * does not refuse (a shadow rule, or a check in `log` or `shadow` mode).
   * `stop` tells the caller whether the rule's remaining checks are skipped.
   */
  const failed = (state: CallState, run: RuleRun, failure: RuleFailure): { verdict?: Verdict; stop: boolean } => {
    const { call } = state;
    const { rule } = run;
    const decisionId = (state.decisionId ??= nextId());
    const shadow = rule.shadow || failure.mode === 'shadow';
    const logOnly = failure.mode === 'log' && !rule.shadow;
    try {
      logger?.info(
        {
          decision_id: decisionId,
          rule: rule.id,
          code: failure.code,
          reason: failure.reason,
          shadow,
          ...(logOnly ? { log_only: true } : {}),
          ...failure.detail,
          request_id: call.id,
          method: call.method,
          path: call.path,
        },
        logOnly ? 'validation: injection detected (log mode, not refused)' : shadow ? 'validation: shadow rule would refuse' : 'validation refused the call',
      );
    } catch {
      // A broken log sink must not fail the call.
    }
    if (logOnly) {
      run.soft ??= 'logged';
      return { stop: false };
    }
    if (shadow) {
      (call.annotations.shadowDenials ??= []).push(rule.id);
      // A shadow document's rule stops at its first failure, as before; a shadow check lets the rule's other checks run.
      if (rule.shadow) {
        count(rule, 'shadow_failed');
        return { stop: true };
      }
      try {
        metrics?.shadowDenials.inc({ policy: rule.policy, rule: rule.name });
      } catch {
        // A broken metric must not fail the call.
      }
      run.soft = 'shadow_failed';
      return { stop: false };
    }
    count(rule, 'failed');
    call.annotations.decisionId = decisionId;
    // The rest of an oversized HTTP/1.1 body is still on the connection: close it rather than read it all.
    const headers = failure.code === 'validate.body_too_large' && call.httpVersion === '1.1' && call.body?.present ? { connection: 'close' } : undefined;
    return { verdict: respond(failure.code, failure.reason, { rule: rule.id, decisionId, ...(headers ? { headers } : {}) }), stop: true };
  };

  /** The injection scan's finding, once: a scan reports at most one failure per call. */
  const injected = (run: RuleRun): RuleFailure | undefined => {
    const scan = run.scan;
    if (!scan || !run.rule.injection) return undefined;
    const failure = injectionFailure(scan, run.rule.injection.mode);
    if (failure) run.scan = undefined;
    return failure;
  };

  /** The body checks of one rule, in order; undefined when the rule refuses nothing. */
  const bodyChecks = (state: CallState, run: RuleRun, read: BodyRead, body: CallBody | undefined): Verdict | undefined => {
    const { rule } = run;
    const { call } = state;
    const steps: (() => RuleFailure | undefined)[] = [() => checkBodySize(rule, read, state.body)];
    if (body) {
      const json = readsJson(rule, call);
      if (json) steps.push(() => checkJson(rule, body));
      if (run.scan && rule.injection?.body) {
        const scan = run.scan;
        const form = json ? 'json' : bodyForm(call);
        steps.push(() => {
          if (form === 'json') scan.json((body.parsed as { value: unknown }).value);
          else if (form === 'form') scan.pairs(body.text, 'body');
          else if (form === 'text') scan.value(body.text, 'body');
          return injected(run);
        });
      }
      if (rule.hasSchema) steps.push(() => checkSchema(rule, body));
    }
    for (const step of steps) {
      const failure = step();
      if (!failure) continue;
      const outcome = failed(state, run, failure);
      if (outcome.verdict) return outcome.verdict;
      if (outcome.stop) return undefined;
    }
    settle(run);
    return undefined;
  };

  /**
   * Synchronous when the body is at hand (it came whole with the request head, as most small bodies
   * do): the chain then goes on without a promise, and the body stays in the request for the
   * upstream write. A check that throws rejects, as it did when this was always asynchronous.
   */
  const checkBodies = (state: CallState, pending: readonly RuleRun[]): Verdict | Promise<Verdict> => {
    const reader = state.call.body;
    if (!reader) {
      // A call built outside a stack cannot be read: refuse rather than skip an enforcing check.
      for (const run of pending) {
        const outcome = failed(state, run, { code: 'filter.error', reason: 'the request body cannot be read here' });
        if (outcome.verdict) return outcome.verdict;
      }
      return CONTINUE;
    }
    let limit = 0;
    for (const run of pending) limit = Math.max(limit, bodyNeed(run.rule, state.call, state.body)!);
    const now = reader.readNow?.(limit);
    if (now === undefined) return reader.read(limit).then((read) => checkRead(state, pending, read));
    try {
      return checkRead(state, pending, now);
    } catch (err) {
      return Promise.reject(err);
    }
  };

  const checkRead = (state: CallState, pending: readonly RuleRun[], read: BodyRead): Verdict => {
    if (read.kind === 'failed') return respond(read.refused ?? (read.timedOut ? 'request.timeout' : 'request.cancelled'), read.reason);
    if (read.kind === 'over_budget') {
      // The check cannot be made now: an enforcing rule fails closed (retryable), shadow rules let it pass unchecked.
      if (pending.every((run) => run.rule.shadow)) return CONTINUE;
      return respond('sidecar.overloaded', 'the sidecar holds as many request bodies as it may (limits.maxBufferedBodies); retry shortly', { headers: { 'retry-after': '1' } });
    }
    // One safe-JSON pass for every rule reading the body as JSON, under the loosest of their limits.
    const body = read.kind === 'complete' ? new CallBody(read.bytes, loosestLimits(pending.map((run) => run.rule.json))) : undefined;
    for (const run of pending) {
      const verdict = bodyChecks(state, run, read, body);
      if (verdict) return verdict;
    }
    return CONTINUE;
  };

  return {
    name: 'validate',
    onRequest(call) {
      const matchPath = matchPathOf(call.path);
      let state: CallState | undefined;
      let pending: RuleRun[] | undefined;
      // Only the rules that could match a call are looked at; every one that matches applies, in rule order.
      for (const rule of index.matching(call.method, matchPath)) {
        state ??= {
          call,
          body: { present: call.body ? call.body.present : hasBodyHeaders(call), declaredLength: call.body?.declaredLength, bufferLimit: maxBodyBuffer },
          headerBytes: undefined,
          decisionId: undefined,
        };
        const s = state;
        const run: RuleRun = { rule, scan: undefined, soft: undefined };
        const failure = checkHead(rule, call, s.body, () => (s.headerBytes ??= headerBytesOf(call.headers)));
        if (failure) {
          const outcome = failed(s, run, failure);
          if (outcome.verdict) return outcome.verdict;
          continue;
        }
        if (rule.injection) {
          run.scan = new InjectionScan(rule.injection);
          run.scan.head(call);
          const found = injected(run);
          if (found) {
            const outcome = failed(s, run, found);
            if (outcome.verdict) return outcome.verdict;
            if (outcome.stop) continue;
          }
        }
        if (bodyNeed(rule, call, s.body) === undefined) settle(run);
        else (pending ??= []).push(run);
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
