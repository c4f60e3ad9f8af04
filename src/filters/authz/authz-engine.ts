import type { AuthorizationRule } from '../../policy/kinds/authorization-policy.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { RuleIndex } from './authz-index.ts';
import { createRuleIndex } from './authz-index.ts';
import type { AuthzRequest } from './authz-request.ts';
import type { AuthzAction, AuthzMode, CompiledRule, RuleRef } from './authz-rules.ts';
import { compileRule, ruleMatches } from './authz-rules.ts';

/*
 * The authorization decision for one workload's AuthorizationPolicy documents,
 * compiled once per policy snapshot:
 *   1. an enforced DENY rule matches      -> deny (that rule decides)
 *   2. no enforced ALLOW policy applies   -> deny by default, or allow with
 *                                            `authorization.allowWhenNoPolicy`
 *   3. an enforced ALLOW rule matches     -> allow (that rule decides)
 *   4. otherwise                          -> deny
 * Among matching rules, the first in document order decides. AUDIT rules never
 * decide; every call they match is reported. An ALLOW policy without rules
 * still "applies" and admits nothing.
 *
 * Shadow mode (`mode: shadow`): shadow rules never change a decision. For a
 * call the enforced rules allow, the filter reports what enforcing them would
 * change: each matching shadow DENY rule; and, when the call was allowed only
 * because no enforced ALLOW policy applies, each shadow ALLOW policy none of
 * whose rules matches. (A call already denied cannot be denied more; when an
 * enforced ALLOW rule matched, another ALLOW policy cannot undo that.)
 *
 * Invariant (test/property/authz.property.test.ts): adding a DENY rule never
 * turns a deny into an allow, and `decide` equals the scan in `explain`.
 */

export interface AuthzEngineOptions {
  /** Admit calls when no enforced ALLOW policy applies (DENY rules still apply). Default false: deny. */
  readonly allowWhenNoPolicy: boolean;
  /** Rules of one action up to which a plain scan replaces the index (default authz-index.ts SCAN_UP_TO; tests pass -1 to always index). */
  readonly scanUpTo?: number;
}

export interface AuthzDecision {
  readonly allow: boolean;
  /** The rule that decided; undefined for the defaults (no policy, no ALLOW match). */
  readonly rule: RuleRef | undefined;
  /** For the caller and the log; never carries policy internals. */
  readonly reason: string;
  /** Shadow rules (and shadow ALLOW policies) that would have denied this allowed call. */
  readonly shadowDenials: readonly RuleRef[];
  /** AUDIT rules that matched. */
  readonly audits: readonly RuleRef[];
}

interface RuleTrace {
  readonly id: string;
  readonly action: AuthzAction;
  readonly mode: AuthzMode;
  readonly matched: boolean;
}

/** A decision with every rule and whether it matched, by a plain scan (for `policy explain` and tests). */
interface AuthzExplanation {
  readonly decision: AuthzDecision;
  readonly rules: readonly RuleTrace[];
}

export interface AuthzEngine {
  decide(req: AuthzRequest): AuthzDecision;
  explain(req: AuthzRequest): AuthzExplanation;
  /** Rules compiled, all actions and modes. */
  readonly ruleCount: number;
}

const REASON_DENY_RULE = 'denied by policy';
const REASON_NO_ALLOW_MATCH = 'no ALLOW rule matches';
const REASON_NO_POLICY = 'no ALLOW policy applies to this workload (deny by default)';
const REASON_ALLOW_RULE = 'allowed by policy';
const REASON_ALLOW_NO_POLICY = 'no ALLOW policy applies to this workload (allowWhenNoPolicy)';

const NONE: readonly RuleRef[] = Object.freeze([]);

interface Compiled {
  readonly rules: CompiledRule[];
  /** Enforced ALLOW policies (with or without rules). */
  readonly allowPolicies: number;
  /** Shadow ALLOW policies, as a whole (`name` ''). */
  readonly shadowAllowPolicies: RuleRef[];
}

function compileDocuments(documents: readonly PolicyDocument[]): Compiled {
  const rules: CompiledRule[] = [];
  let allowPolicies = 0;
  const shadowAllowPolicies: RuleRef[] = [];
  for (const doc of documents) {
    if (!isKind(doc, 'AuthorizationPolicy')) continue;
    // Documents reach the sidecar validated (defaults filled); tests may hand in bare specs.
    const action: AuthzAction = doc.spec.action ?? 'ALLOW';
    const mode: AuthzMode = doc.spec.mode ?? 'enforce';
    const policy = `${doc.metadata.namespace}/${doc.metadata.name}`;
    const specRules: readonly AuthorizationRule[] = doc.spec.rules ?? [];
    const compiled = specRules.map((rule, index) => compileRule(rule, { policy, index, ordinal: rules.length + index, action, mode }));
    rules.push(...compiled);
    if (action === 'ALLOW' && mode === 'enforce') allowPolicies++;
    if (action === 'ALLOW' && mode === 'shadow') shadowAllowPolicies.push(Object.freeze({ id: policy, policy, name: '' }));
  }
  return { rules, allowPolicies, shadowAllowPolicies };
}

function ref(rule: CompiledRule): RuleRef {
  return { id: rule.id, policy: rule.policy, name: rule.name };
}

export function compileAuthorization(documents: readonly PolicyDocument[], opts: AuthzEngineOptions): AuthzEngine {
  const { rules, allowPolicies, shadowAllowPolicies } = compileDocuments(documents);
  const pick = (action: AuthzAction, mode: AuthzMode | undefined) => rules.filter((r) => r.action === action && (mode === undefined || r.mode === mode));
  const index = (list: readonly CompiledRule[]) => createRuleIndex(list, opts.scanUpTo);
  const deny = index(pick('DENY', 'enforce'));
  const allow = index(pick('ALLOW', 'enforce'));
  const shadowDeny = index(pick('DENY', 'shadow'));
  const shadowAllow = index(pick('ALLOW', 'shadow'));
  // AUDIT never enforces anything, so its mode makes no difference.
  const audit = index(pick('AUDIT', undefined));
  const admitsWithoutPolicy = allowPolicies === 0 && opts.allowWhenNoPolicy;

  // Decisions without shadow or audit findings are shared: the common path allocates none.
  const refs = new Map<CompiledRule, RuleRef>(rules.map((r) => [r, Object.freeze(ref(r))]));
  // A rule decides one way only (DENY denies, ALLOW allows); without a rule, the reason tells the outcome.
  const byRule = new Map<CompiledRule, AuthzDecision>();
  const byReason = new Map<string, AuthzDecision>();
  const decision = (allowed: boolean, rule: CompiledRule | undefined, reason: string, shadowDenials: readonly RuleRef[], audits: readonly RuleRef[]): AuthzDecision => {
    const ruleRef = rule && refs.get(rule);
    if (shadowDenials.length > 0 || audits.length > 0) return { allow: allowed, rule: ruleRef, reason, shadowDenials, audits };
    let shared = rule ? byRule.get(rule) : byReason.get(reason);
    if (!shared) {
      shared = Object.freeze({ allow: allowed, rule: ruleRef, reason, shadowDenials: NONE, audits: NONE });
      if (rule) byRule.set(rule, shared);
      else byReason.set(reason, shared);
    }
    return shared;
  };

  const shadowFindings = (req: AuthzRequest, allowedByDefault: boolean): readonly RuleRef[] => {
    let found: RuleRef[] | undefined;
    if (shadowDeny.size > 0) {
      const matched = shadowDeny.all(req);
      if (matched.length > 0) found = matched.map((r) => refs.get(r)!);
    }
    if (allowedByDefault && shadowAllowPolicies.length > 0 && shadowAllow.first(req) === undefined) {
      (found ??= []).push(...shadowAllowPolicies);
    }
    return found ?? NONE;
  };

  return {
    ruleCount: rules.length,
    decide(req) {
      const audits = audit.size > 0 ? audit.all(req).map((r) => refs.get(r)!) : NONE;
      const denying = deny.first(req);
      if (denying) return decision(false, denying, REASON_DENY_RULE, NONE, audits);
      if (allowPolicies === 0) {
        if (!admitsWithoutPolicy) return decision(false, undefined, REASON_NO_POLICY, NONE, audits);
        return decision(true, undefined, REASON_ALLOW_NO_POLICY, shadowFindings(req, true), audits);
      }
      const allowing = allow.first(req);
      if (!allowing) return decision(false, undefined, REASON_NO_ALLOW_MATCH, NONE, audits);
      return decision(true, allowing, REASON_ALLOW_RULE, shadowFindings(req, false), audits);
    },
    explain(req) {
      const trace = rules.map((rule) => ({ rule, matched: ruleMatches(rule, req) }));
      const first = (action: AuthzAction, mode: AuthzMode) => trace.find((t) => t.matched && t.rule.action === action && t.rule.mode === mode)?.rule;
      const audits = trace.filter((t) => t.matched && t.rule.action === 'AUDIT').map((t) => ref(t.rule));
      const shadow = (allowedByDefault: boolean): RuleRef[] => {
        const found = trace.filter((t) => t.matched && t.rule.action === 'DENY' && t.rule.mode === 'shadow').map((t) => ref(t.rule));
        if (allowedByDefault && shadowAllowPolicies.length > 0 && !first('ALLOW', 'shadow')) found.push(...shadowAllowPolicies);
        return found;
      };
      const denying = first('DENY', 'enforce');
      const allowing = first('ALLOW', 'enforce');
      let result: AuthzDecision;
      if (denying) result = { allow: false, rule: ref(denying), reason: REASON_DENY_RULE, shadowDenials: [], audits };
      else if (allowPolicies === 0 && !admitsWithoutPolicy) result = { allow: false, rule: undefined, reason: REASON_NO_POLICY, shadowDenials: [], audits };
      else if (allowPolicies === 0) result = { allow: true, rule: undefined, reason: REASON_ALLOW_NO_POLICY, shadowDenials: shadow(true), audits };
      else if (!allowing) result = { allow: false, rule: undefined, reason: REASON_NO_ALLOW_MATCH, shadowDenials: [], audits };
      else result = { allow: true, rule: ref(allowing), reason: REASON_ALLOW_RULE, shadowDenials: shadow(false), audits };
      return {
        decision: result,
        rules: trace.map((t) => ({ id: t.rule.id, action: t.rule.action, mode: t.rule.mode, matched: t.matched })),
      };
    },
  };
}
