import type { BucketShape, TakeResult } from './gcra.ts';

/*
 * The RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers
 * (-09 to -11: lists of items named by the rule, Structured Fields syntax).
 *
 * RateLimit-Policy, one item per rule: `q` the quota of a whole-second window
 * `w` (the rule's limit, scaled down to whole seconds when its period is not
 * one), and, when the bucket is not q calls deep, `meshgate-burst` (the draft
 * asks for implementation-specific parameters to carry a vendor prefix, and
 * names a burst as the example): 100/s with burst 10 is
 * `"per-caller";q=100;w=1;meshgate-burst=10`, so nobody reads it as 100 at once.
 *
 * RateLimit, one item per rule that counted the call: `r` the calls the
 * bucket admits right now, `t` the whole seconds during which it admits no
 * more than that (until its next token; left out when that is under a
 * second). A refused call has r=0 and t=Retry-After. Each value is one the
 * client can rely on: a shorter window and a smaller quota than the truth,
 * never a larger one.
 */

/** Where a rule's fields are sent: every call it counted, refused calls only, or none. */
export type RateLimitHeaderMode = 'all' | 'refusals' | 'none';

/** The RateLimit-Policy item of a rule, computed once per snapshot. */
export function policyItem(name: string, limit: { readonly requests: number; readonly per: number }, burst: number): string {
  let w: number;
  let q: number;
  if (limit.per % 1000 === 0) {
    w = limit.per / 1000;
    q = limit.requests;
  } else {
    // The draft's window is whole seconds: the smallest one that holds the period, and the calls the rule admits in it, rounded down.
    w = Math.ceil(limit.per / 1000);
    q = Math.floor((limit.requests * w * 1000) / limit.per);
  }
  return `"${name}";q=${q};w=${w}${burst === q ? '' : `;meshgate-burst=${burst}`}`;
}

/** The RateLimit item of a rule that counted this call. */
export function serviceLimitItem(name: string, result: TakeResult, shape: BucketShape): string {
  if (!result.allowed) return refusedItem(name, Math.max(1, Math.ceil(result.retryAfterMs / 1000)));
  // Tokens come back one per interval; the last one taken returns when the bucket is full again (resetMs).
  const nextTokenMs = result.resetMs - (shape.burst - 1 - result.remaining) * shape.intervalMs;
  const t = Math.floor(Math.max(0, nextTokenMs) / 1000);
  return t >= 1 ? `"${name}";r=${result.remaining};t=${t}` : `"${name}";r=${result.remaining}`;
}

/** Nothing admitted for `seconds` (a refusal, or a store outage under failureMode deny). */
export function refusedItem(name: string, seconds: number): string {
  return `"${name}";r=0;t=${seconds}`;
}
