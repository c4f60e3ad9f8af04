import type { ReasonCode } from './reason-codes.ts';

/**
 * The outcome of one per-call check. Results are values on the data path,
 * never exceptions (see STYLE.md, "What we take" #5).
 */
export type Verdict = ContinueVerdict | RespondVerdict;

export interface ContinueVerdict {
  readonly kind: 'continue';
}

export interface RespondVerdict {
  readonly kind: 'respond';
  /** Stable reason code from src/core/reason-codes.ts, e.g. `authz.denied`: a code not in the table does not compile. */
  readonly code: ReasonCode<'data'>;
  /** Human-readable reason for the caller; never carries policy internals. */
  readonly reason: string;
  /** `namespace/policy#rule` that decided, when a rule decided. */
  readonly rule?: string;
  /** Id of the decision (CallAnnotations.decisionId), quoted in the deny body so the caller can hand it to an operator. */
  readonly decisionId?: string;
  /** Extra response headers (e.g. `retry-after`). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * HTTP status instead of the code's own, when the rule that decided chose
   * one (a check of your own: a 4xx). gRPC callers still get the code's
   * grpc-status, and the reason code stays what callers and alerts key on.
   */
  readonly status?: number;
}

export const CONTINUE: ContinueVerdict = Object.freeze({ kind: 'continue' });

export function respond(code: ReasonCode<'data'>, reason: string, extra: Omit<RespondVerdict, 'kind' | 'code' | 'reason'> = {}): RespondVerdict {
  return { kind: 'respond', code, reason, ...extra };
}
