import type { Filter } from '../../core/filter.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import { compileRule } from './authz-rules.ts';
import type { RuleSpec, RuleTest } from './authz-rules.ts';

interface CompiledRule {
  readonly id: string;
  readonly test: RuleTest;
}

export interface AuthzOptions {
  /** Mesh-wide switch: admit calls when no ALLOW policy applies to the workload. Default false (deny). */
  readonly allowWhenNoPolicy: boolean;
}

/**
 * Authorization from AuthorizationPolicy documents, compiled once per snapshot.
 * DENY rules are checked first; then, if the workload has ALLOW rules, one must
 * match; with none, the workload is deny-by-default unless `allowWhenNoPolicy`.
 * Shadow and AUDIT policies are not enforced here.
 */
export function createAuthzFilter(documents: readonly PolicyDocument[], opts: AuthzOptions): Filter {
  const deny: CompiledRule[] = [];
  const allow: CompiledRule[] = [];
  for (const doc of documents) {
    if (doc.kind !== 'AuthorizationPolicy' || doc.spec.mode === 'shadow') continue;
    const action = (doc.spec.action as string | undefined) ?? 'ALLOW';
    if (action === 'AUDIT') continue;
    const rules = (doc.spec.rules as RuleSpec[] | undefined) ?? [];
    rules.forEach((rule, i) => {
      const id = `${doc.metadata.namespace}/${doc.metadata.name}#${rule.name ?? i}`;
      const target = action === 'DENY' ? deny : allow;
      target.push({ id, test: compileRule(rule, action === 'DENY' ? 'always-match' : 'never-match') });
    });
  }
  const hasAllow = allow.length > 0 || documents.some((d) => d.kind === 'AuthorizationPolicy' && d.spec.mode !== 'shadow' && ((d.spec.action as string | undefined) ?? 'ALLOW') === 'ALLOW');
  return {
    name: 'authz',
    onRequest(call) {
      for (const rule of deny) {
        if (rule.test(call)) {
          call.annotations.decision = 'deny';
          call.annotations.rule = rule.id;
          return respond('authz.denied', 'denied by policy', { rule: rule.id });
        }
      }
      if (!hasAllow) {
        if (opts.allowWhenNoPolicy) return CONTINUE;
        return respond('authz.denied', 'no ALLOW policy applies to this workload (deny by default)');
      }
      for (const rule of allow) {
        if (rule.test(call)) {
          call.annotations.decision = 'allow';
          call.annotations.rule = rule.id;
          return CONTINUE;
        }
      }
      return respond('authz.denied', 'no ALLOW rule matches');
    },
  };
}
