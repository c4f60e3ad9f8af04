export interface RetryBudgetOptions {
  /** Retries allowed in flight as a share (0-100) of active requests. */
  readonly percent: number;
  /** Retries always allowed in flight, so a quiet service can still retry. */
  readonly minConcurrency: number;
}

export interface RetryBudget {
  /** Takes a retry slot; false means the budget is spent and the call must not retry. */
  tryAcquire(activeRequests: number): boolean;
  /** Returns a slot taken by a successful tryAcquire(), when that retry ends. */
  release(): void;
  /** Retries in flight now. */
  inFlight(): number;
}

/**
 * Envoy/Linkerd retry budget: caps retries in flight relative to load, so
 * retries cannot multiply traffic into an upstream that is already failing.
 */
export function createRetryBudget(opts: RetryBudgetOptions): RetryBudget {
  let inFlight = 0;
  return {
    tryAcquire(activeRequests) {
      const limit = Math.max(opts.minConcurrency, (activeRequests * opts.percent) / 100);
      if (inFlight >= limit) return false;
      inFlight++;
      return true;
    },
    release() {
      // Clamped so a double release cannot mint extra budget.
      if (inFlight > 0) inFlight--;
    },
    inFlight: () => inFlight,
  };
}
