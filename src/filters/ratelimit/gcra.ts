/*
 * GCRA (the generic cell rate algorithm): a token bucket kept as one number,
 * the "theoretical arrival time" (TAT) of the next call. A bucket of `burst`
 * tokens refilling one token per `intervalMs` admits a call at `now` when
 * TAT - now <= (burst - 1) * intervalMs. One number per bucket makes the same
 * algorithm cheap in memory and atomic in Redis (redis-store.ts runs it as a
 * Lua script), so local and global rules count alike.
 *
 * Written here because the libraries at hand count fixed windows
 * (rate-limiter-flexible), which admit 2x the limit across a window edge and
 * have no burst size of their own.
 */

/** Rounding slack of the comparison: far below any clock's resolution. */
const EPSILON_MS = 1e-6;

export interface BucketShape {
  /** Milliseconds per token: `per / requests`. */
  readonly intervalMs: number;
  /** Bucket size: calls admitted at once. */
  readonly burst: number;
}

export interface TakeResult {
  readonly allowed: boolean;
  /** Tokens left after this call (0 when refused). */
  readonly remaining: number;
  /** When refused: milliseconds until one token is back. */
  readonly retryAfterMs: number;
  /** Milliseconds until the bucket is full again. */
  readonly resetMs: number;
}

export interface TakeOutcome extends TakeResult {
  /** The TAT to store: unchanged when refused. */
  readonly tat: number;
}

/** Takes one token from the bucket whose TAT is `tat` (undefined: a full bucket). */
export function takeToken(tat: number | undefined, now: number, shape: BucketShape): TakeOutcome {
  const base = tat === undefined || tat < now ? now : tat;
  const next = base + shape.intervalMs;
  const allowAt = base - (shape.burst - 1) * shape.intervalMs; // not next - burst * interval: that rounds, and a full burst-1 bucket refused about half its calls
  // Intervals like 1000/3 ms are not exact in floating point: a caller keeping exactly to the
  // rate must not be refused by rounding, so a nanosecond of slack.
  if (now + EPSILON_MS < allowAt) {
    return { allowed: false, remaining: 0, retryAfterMs: allowAt - now, resetMs: base - now, tat: base };
  }
  return { allowed: true, remaining: Math.max(0, Math.floor((now - allowAt) / shape.intervalMs)), retryAfterMs: 0, resetMs: next - now, tat: next };
}

export function bucketShape(limit: { readonly requests: number; readonly per: number }, burst: number | undefined): BucketShape {
  return { intervalMs: limit.per / limit.requests, burst: burst ?? limit.requests };
}
