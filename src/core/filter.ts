import type { CallContext } from './call-context.ts';
import type { Verdict } from './verdict.ts';
import { CONTINUE } from './verdict.ts';

/**
 * The one interface every per-call check implements. A filter's configuration
 * is compiled when it is constructed (once per policy snapshot); per-call state
 * lives only in the CallContext.
 */
export interface Filter {
  readonly name: string;
  onRequest(call: CallContext): Verdict | Promise<Verdict>;
  /**
   * True when the filter may hold a call in a queue (rate-limit throttle and
   * concurrency rules): only then does the stack watch for the caller leaving
   * while the chain runs (CallAnnotations.onCallerGone).
   */
  readonly queues?: boolean;
}

/**
 * Runs filters in order; the first `respond` verdict short-circuits.
 * Synchronous verdicts stay synchronous so the common path allocates no promise.
 */
export function runFilters(filters: readonly Filter[], call: CallContext): Verdict | Promise<Verdict> {
  for (let i = 0; i < filters.length; i++) {
    const filter = filters[i]!;
    const verdict = filter.onRequest(call);
    if (verdict instanceof Promise) return continueAsync(filters, i, verdict, call);
    if (verdict.kind === 'respond') return verdict;
  }
  return CONTINUE;
}

async function continueAsync(filters: readonly Filter[], index: number, pending: Promise<Verdict>, call: CallContext): Promise<Verdict> {
  const first = await pending;
  if (first.kind === 'respond') return first;
  for (let i = index + 1; i < filters.length; i++) {
    const verdict = await filters[i]!.onRequest(call);
    if (verdict.kind === 'respond') return verdict;
  }
  return CONTINUE;
}
