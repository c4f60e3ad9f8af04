import type { ReasonCode } from '../core/reason-codes.ts';

/*
 * The CA's refusals of a signing. Each reason is a code of the `ca` section
 * of the one reason-code table (src/core/reason-codes.ts), which gives its
 * gRPC status; the message the caller sees is free text.
 */

/** A refusal as a value: the per-call path returns these instead of throwing. */
export interface CaRefusal {
  readonly ok: false;
  readonly reason: ReasonCode<'ca'>;
  /** For the caller and the log; never contains a token or key. */
  readonly message: string;
}

export function refuse(reason: ReasonCode<'ca'>, message: string): CaRefusal {
  return { ok: false, reason, message };
}
