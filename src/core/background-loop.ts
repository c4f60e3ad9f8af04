import type { BackoffOptions } from './backoff.ts';
import { backoffDelay } from './backoff.ts';
import type { Random } from './clock.ts';

/*
 * The one shape for a background loop (certificate renewal, rescans,
 * re-announcements): run a step, wait what it asks for, run it again; after a
 * failure wait a jittered backoff that grows with failures in a row, and never
 * give up. Only the owner's signal ends it. A loop that logs a failure and
 * stops (the CA's serving-certificate renewal did) lets what it keeps fresh
 * expire quietly.
 */

/** One run of the loop; resolves with the milliseconds until the next run. */
export type LoopStep = (signal: AbortSignal) => Promise<number>;

export interface BackgroundLoopOptions {
  readonly signal: AbortSignal;
  /** Before the first run; default 0. */
  readonly firstDelayMs?: number;
  /** After a failed step: full jitter up to base * 2^failures-in-a-row, capped at max, plus base. */
  readonly backoff: BackoffOptions;
  readonly random: Random;
  /** A failed step, with how many failed in a row and when the next try comes. Must not throw. */
  readonly onError: (err: unknown, failuresInRow: number, retryInMs: number) => void;
  /** Caps the wait after a failure (e.g. so a retry comes before a certificate expires). */
  readonly maxRetryDelayMs?: () => number;
  /** Keeps the process alive while waiting; default false (a loop never holds a process open by itself). */
  readonly ref?: boolean;
  /**
   * Waits out the backoff after a failure instead of a plain timer, and may end
   * it early (e.g. as soon as a probe sees the server back). Rejects or
   * resolves when the signal aborts.
   */
  readonly waitAfterFailure?: (ms: number, signal: AbortSignal) => Promise<unknown>;
  /** Every other wait (tests pass one that counts instead of sleeping); a timer by default. */
  readonly wait?: (ms: number, signal: AbortSignal) => Promise<unknown>;
}

/** setTimeout holds at most 2^31-1 ms (~24.8 days); longer waits re-arm on the way. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Runs `step` until `opts.signal` aborts; resolves then. Never rejects. */
export async function runBackgroundLoop(step: LoopStep, opts: BackgroundLoopOptions): Promise<void> {
  let waitMs = opts.firstDelayMs ?? 0;
  let failuresInRow = 0;
  let first = true;
  const waitNext = async (): Promise<boolean> => {
    // No first delay: the first run starts at once (later zero waits still yield to the event loop).
    if (first) {
      first = false;
      if (waitMs === 0) return !opts.signal.aborted;
    }
    const custom = failuresInRow > 0 && opts.waitAfterFailure ? opts.waitAfterFailure : opts.wait;
    if (!custom) return wait(waitMs, opts.signal, opts.ref ?? false);
    if (opts.signal.aborted) return false;
    await custom(waitMs, opts.signal).catch(() => undefined);
    return !opts.signal.aborted;
  };
  while (await waitNext()) {
    try {
      waitMs = Math.max(0, await step(opts.signal));
      failuresInRow = 0;
    } catch (err) {
      if (opts.signal.aborted) return;
      failuresInRow++;
      const backoff = backoffDelay(failuresInRow, opts.backoff, opts.random) + opts.backoff.baseMs;
      waitMs = Math.max(0, Math.min(backoff, opts.maxRetryDelayMs?.() ?? Infinity));
      opts.onError(err, failuresInRow, waitMs);
    }
  }
}

/** Resolves true after `ms`, false as soon as the signal aborts. */
async function wait(ms: number, signal: AbortSignal, ref: boolean): Promise<boolean> {
  let left = ms;
  do {
    if (signal.aborted) return false;
    const chunk = Math.min(left, MAX_TIMER_MS);
    const fired = await new Promise<boolean>((resolve) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      }, chunk);
      if (!ref) timer.unref();
      signal.addEventListener('abort', onAbort, { once: true });
    });
    if (!fired) return false;
    left -= chunk;
  } while (left > 0);
  return !signal.aborted;
}
