/*
 * One budget for every request body the sidecar holds in memory at once.
 * `limits.maxBodyBuffer` bounds one call; without a shared bound, many slow
 * callers each parked at that limit (10 000 x 1 MiB) would exhaust memory.
 * A read that would cross the budget stops and the call is refused with
 * 503 sidecar.overloaded (retry-after), as Envoy's overload manager sheds load
 * instead of running out of memory. Created once per sidecar.
 */

export interface BodyBudget {
  /** Takes `bytes` from the budget; false (nothing taken) when they do not fit. */
  reserve(bytes: number): boolean;
  release(bytes: number): void;
  /** Bytes held right now. */
  inUse(): number;
  readonly capacity: number;
}

export function createBodyBudget(capacity: number): BodyBudget {
  let used = 0;
  return {
    capacity,
    reserve(bytes) {
      if (used + bytes > capacity) return false;
      used += bytes;
      return true;
    },
    release(bytes) {
      used = Math.max(0, used - bytes);
    },
    inUse: () => used,
  };
}
