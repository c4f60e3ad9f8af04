import type { CallContext } from '../../core/call-context.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { Filter } from '../../core/filter.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { FilterDeps, FilterKind } from '../filter-kind.ts';
import type { AuthzDecision, AuthzEngine } from './authz-engine.ts';
import { compileAuthorization } from './authz-engine.ts';
import { authzRequestOf } from './authz-request.ts';

/** The counters the filter feeds (SidecarMetrics has them); labels come from policy documents only. */
interface AuthzMetrics {
  readonly authzDecisions: { inc(labels: { decision: string; policy: string; rule: string }): void };
  readonly shadowDenials: { inc(labels: { policy: string; rule: string }): void };
}

interface AuthzLogger {
  info(fields: object, message: string): void;
}

export interface AuthzRuntimeDeps extends FilterDeps {
  /** Mesh-wide switch (authorization.allowWhenNoPolicy): admit calls when no ALLOW policy applies to the workload. */
  readonly allowWhenNoPolicy: boolean;
  readonly metrics?: AuthzMetrics;
  /** Denials, shadow denials and audits are logged with their decision id: the trail an operator looks up. */
  readonly logger?: AuthzLogger;
}

/** What outlives every snapshot's filter: created once per sidecar. */
export interface AuthzRuntime {
  readonly allowWhenNoPolicy: boolean;
  readonly nextDecisionId: () => string;
  readonly metrics: AuthzMetrics | undefined;
  readonly logger: AuthzLogger | undefined;
}

export function createAuthzRuntime(deps: AuthzRuntimeDeps): AuthzRuntime {
  return { allowWhenNoPolicy: deps.allowWhenNoPolicy, nextDecisionId: createDecisionIds(deps.random), metrics: deps.metrics, logger: deps.logger };
}

/**
 * Authorization from AuthorizationPolicy documents (semantics: authz-engine.ts),
 * compiled once per snapshot into indexed matchers. Every call gets a decision
 * id; the decision, the deciding rule (`namespace/policy#rule`) and the id go
 * on `call.annotations` for the access log and the span, into the deny body,
 * the metrics and, for denials, shadow denials and audits, the log.
 */
export function createAuthzFilter(documents: readonly PolicyDocument[], runtime: AuthzRuntime): Filter {
  const engine: AuthzEngine = compileAuthorization(documents, { allowWhenNoPolicy: runtime.allowWhenNoPolicy });
  const { metrics, logger, nextDecisionId: nextId } = runtime;

  // Telemetry never breaks traffic (STYLE.md #8).
  const report = (call: CallContext, decision: AuthzDecision, decisionId: string): void => {
    try {
      metrics?.authzDecisions.inc({ decision: decision.allow ? 'allow' : 'deny', policy: decision.rule?.policy ?? '', rule: decision.rule?.name ?? '' });
      for (const rule of decision.audits) metrics?.authzDecisions.inc({ decision: 'audit', policy: rule.policy, rule: rule.name });
      for (const rule of decision.shadowDenials) metrics?.shadowDenials.inc({ policy: rule.policy, rule: rule.name });
      if (logger && (!decision.allow || decision.shadowDenials.length > 0 || decision.audits.length > 0)) {
        logger.info(
          {
            decision_id: decisionId,
            decision: decision.allow ? 'allow' : 'deny',
            rule: decision.rule?.id,
            reason: decision.reason,
            ...(decision.shadowDenials.length > 0 ? { shadow_denials: decision.shadowDenials.map((r) => r.id) } : {}),
            ...(decision.audits.length > 0 ? { audit: decision.audits.map((r) => r.id) } : {}),
            request_id: call.id,
            method: call.method,
            path: call.path,
            authority: call.authority,
            source_principal: call.source.principal,
            source_address: call.source.address,
            request_principal: call.annotations.auth?.principal,
          },
          decision.allow ? (decision.shadowDenials.length > 0 ? 'authorization: shadow rules would deny' : 'authorization: audit') : 'authorization denied',
        );
      }
    } catch {
      // A broken metric or log sink must not fail the call.
    }
  };

  return {
    name: 'authz',
    onRequest(call) {
      const decision = engine.decide(authzRequestOf(call));
      const decisionId = nextId();
      const annotations = call.annotations;
      annotations.decisionId = decisionId;
      annotations.decision = decision.allow ? 'allow' : 'deny';
      annotations.rule = decision.rule?.id;
      if (decision.shadowDenials.length > 0) {
        annotations.shadowDenials = [...(annotations.shadowDenials ?? []), ...decision.shadowDenials.map((r) => r.id)];
      }
      report(call, decision, decisionId);
      if (decision.allow) return CONTINUE;
      return respond('authz.denied', decision.reason, decision.rule ? { rule: decision.rule.id, decisionId } : { decisionId });
    },
  };
}

/** Authorization: after authn, whose verified identities its rules match. */
export const authzKind: FilterKind<AuthzRuntime> = { name: 'authz', compile: createAuthzFilter };
