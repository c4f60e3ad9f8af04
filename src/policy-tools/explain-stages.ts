import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext } from '../core/call-context.ts';
import { InjectionScan, injectionFailure } from '../filters/validate/injection.ts';
import type { BodyFacts, CompiledValidationRule } from '../filters/validate/validate-rules.ts';
import { checkHead, compileValidationRules, headerBytesOf } from '../filters/validate/validate-rules.ts';
import { compileCallMatch, matchPathOf } from '../policy/call-match.ts';
import type { RateLimitRule } from '../policy/kinds/rate-limit-policy.ts';
import { isKind } from '../policy/typed-documents.ts';
import type { PolicyDocument } from '../policy/types.ts';
import { declaredLengthOf } from '../proxy/request-body.ts';

/*
 * The stages of `policy explain` after authorization, for an allowed call, in
 * the inbound chain's order: rate limit, then validate. Neither has the live
 * state of a sidecar (bucket counts) nor a body, so each reports what the
 * policy alone decides.
 */

/** One line of an explanation's trail. */
export type TrailStage = 'path' | 'version' | 'ip-access' | 'authn' | 'authz' | 'filter' | 'ratelimit' | 'validate';

export interface TrailEntry {
  readonly stage: TrailStage;
  /** `namespace/policy#rule`, `namespace/policy` for a whole document, or '' for a stage note. */
  readonly rule: string;
  /** ALLOW, DENY, AUDIT for authz rules. */
  readonly action?: string;
  readonly mode?: string;
  readonly matched: boolean;
  /** This entry decided the outcome. */
  readonly decides?: boolean;
  readonly note?: string;
}

/** A stage refused the call: the explanation's code, rule and reason. */
export interface StageRefusal {
  readonly code: string;
  readonly rule: string;
  readonly reason: string;
}

/** The RateLimitPolicy rules that would count the call, with their limits (counts are live state, not in the policy: never a refusal). */
export function rateLimitTrail(documents: readonly PolicyDocument[], method: string, path: string): TrailEntry[] {
  const entries: TrailEntry[] = [];
  const matchPath = matchPathOf(path);
  for (const doc of documents) {
    if (!isKind(doc, 'RateLimitPolicy')) continue;
    const spec = doc.spec;
    for (const rule of spec.rules) {
      const matched = compileCallMatch(rule.match)(method, matchPath);
      entries.push({
        stage: 'ratelimit',
        rule: `${doc.metadata.namespace}/${doc.metadata.name}#${rule.name}`,
        mode: spec.mode,
        matched,
        note: matched ? `${rateLimitNote(rule)}${spec.mode === 'shadow' ? ' (shadow: never refuses)' : ''}` : undefined,
      });
    }
  }
  return entries;
}

/** What one rule does to a call it matches, with its limits. */
function rateLimitNote(rule: RateLimitRule): string {
  const per = rule.key ? `per ${rule.key.join(' + ')}` : 'one limit for every call it matches';
  const c = rule.concurrency;
  if (c) {
    const queue = c.queue > 0 ? `then up to ${c.queue} wait at most ${c.maxWait} ms (503 ratelimit.concurrency_timeout)` : 'no queue';
    return `concurrency limit: at most ${c.max} calls in flight, ${queue}, then 503 ratelimit.concurrency_exceeded; ${per}`;
  }
  const limit = rule.limit!;
  const burst = rule.burst ?? limit.requests;
  const throttle = rule.throttle ? `; over the rate, up to ${rule.throttle.queue} callers wait at most ${rule.throttle.maxDelay} ms (then 429)` : '';
  return `takes a token: ${limit.requests} per ${limit.per} ms, burst ${burst}, ${per}, ${rule.scope}${throttle}`;
}

/**
 * ValidationPolicy rules, in the validate filter's order, with its head checks
 * (validate-rules.ts checkHead: required headers, header size, content type, a
 * declared Content-Length above maxBodyBytes), then injection detection on the
 * path, query and headers, with its score and the signatures that matched. The
 * first failing enforcing rule refuses, as in the sidecar, and later rules are
 * not checked. The body is never described: checks that read it are listed,
 * not evaluated.
 */
export function validateTrail(documents: readonly PolicyDocument[], ctx: CallContext): { entries: TrailEntry[]; refusal: StageRefusal | undefined } {
  const { rules } = compileValidationRules(documents);
  const entries: TrailEntry[] = [];
  const matchPath = matchPathOf(ctx.path);
  const declaredLength = declaredLengthOf(ctx.headers);
  // limits.maxBodyBuffer is sidecar configuration, unknown here: only the checks that read the body depend on it.
  const body: BodyFacts = { present: describesBody(ctx.headers), declaredLength, bufferLimit: Infinity };
  let headerBytes: number | undefined;
  for (const rule of rules) {
    const mode = rule.shadow ? 'shadow' : 'enforce';
    if (!rule.match(ctx.method, matchPath)) {
      entries.push({ stage: 'validate', rule: rule.id, mode, matched: false });
      continue;
    }
    // hasSchema off: its head check ("a JSON body is required") is about the body, which explain never has.
    const failure = checkHead({ ...rule, hasSchema: false }, ctx, body, () => (headerBytes ??= headerBytesOf(ctx.headers)));
    if (failure && !rule.shadow) {
      entries.push({ stage: 'validate', rule: rule.id, mode, matched: true, decides: true, note: `${failure.code}: ${failure.reason}` });
      return { entries, refusal: { code: failure.code, rule: rule.id, reason: failure.reason } };
    }
    const notes = [failure ? `shadow: would refuse (${failure.code}: ${failure.reason})` : 'header checks pass'];
    if (!failure && rule.injection) {
      const injection = injectionNote(rule, ctx);
      if (injection.refusal) {
        entries.push({ stage: 'validate', rule: rule.id, mode, matched: true, decides: true, note: injection.note });
        return { entries, refusal: { ...injection.refusal, rule: rule.id } };
      }
      notes.push(injection.note);
    }
    if (rule.contentTypes && !body.present) notes.push('contentTypes not checked: no body described (--header content-type or content-length)');
    // gRPC bodies are never read by the sidecar: no body check applies to them.
    if (!failure && !ctx.isGrpc) {
      const needBody = [
        ...(rule.hasSchema ? ['jsonSchema'] : []),
        ...(rule.jsonConfigured ? ['json'] : []),
        ...(rule.injection?.body ? ['injection in the body'] : []),
        ...(rule.maxBodyBytes !== undefined && declaredLength === undefined ? ['maxBodyBytes'] : []),
      ];
      if (needBody.length > 0)
        notes.push(`${needBody.join(', ')} need${needBody.length === 1 ? 's' : ''} the body: not evaluated offline${rule.hasSchema ? ' (a call without a body gets validate.malformed_json)' : ''}`);
    }
    entries.push({ stage: 'validate', rule: rule.id, mode, matched: true, note: notes.join('; ') });
  }
  return { entries, refusal: undefined };
}

/**
 * What a rule's injection detection makes of the call's path, query and
 * headers (all signatures, not only up to the threshold), and the refusal an
 * enforcing `block` finding is.
 */
function injectionNote(rule: CompiledValidationRule, ctx: CallContext): { note: string; refusal?: { code: string; reason: string } } {
  const settings = rule.injection!;
  const scan = new InjectionScan(settings, true);
  scan.head(ctx);
  const verdict = scan.verdict;
  const found = injectionFailure(scan, settings.mode);
  const what =
    verdict.kind === 'over_limit'
      ? `${verdict.inspected} bytes of text, more than maxInspectBytes`
      : verdict.kind === 'scored'
        ? `score ${verdict.finding.score} of ${settings.threshold} (${verdict.finding.cls}): ${verdict.finding.signatures.join(', ')} at ${verdict.finding.location}`
        : `score 0 of ${settings.threshold}`;
  if (found && !rule.shadow && !found.mode) return { note: `${found.code}: ${found.reason}; injection in the path, query and headers: ${what}`, refusal: { code: found.code, reason: found.reason } };
  const outcome = found ? (found.mode === 'log' ? ' (log mode: would be logged, not refused)' : ' (shadow: would refuse)') : '';
  return { note: `injection in the path, query and headers: ${what}${outcome}` };
}

/**
 * Whether the described call carries a body: a head that declares one (as the
 * sidecar reads an HTTP/1.1 head), or a content type (content comes with one;
 * an HTTP/2 caller need not declare a length).
 */
function describesBody(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0') || headers['content-type'] !== undefined;
}
