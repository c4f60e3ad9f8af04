import { inspect } from 'node:util';

export interface EventuallyOptions<T> {
  /** Whether a value is the one waited for; default: truthy. */
  readonly until?: (value: T) => boolean;
  readonly timeoutMs?: number;
  /** Between probes; probes never overlap. */
  readonly intervalMs?: number;
  /** What is waited for, for the failure message. */
  readonly what?: string;
}

/**
 * Probes until `until(value)` holds and returns that value; fails after
 * `timeoutMs` with what it waited for and the last value (or error) it saw,
 * so a failure says what the state was instead of failing later elsewhere.
 * For state that has no event to await.
 */
export async function eventually<T>(probe: () => T | Promise<T>, opts: EventuallyOptions<T> = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const until = opts.until ?? ((value: T) => Boolean(value));
  const deadline = performance.now() + timeoutMs;
  let last: { value: T } | { error: unknown } | undefined;
  for (;;) {
    try {
      const value = await probe();
      if (until(value)) return value;
      last = { value };
    } catch (error) {
      last = { error };
    }
    if (performance.now() >= deadline) {
      const seen = last === undefined ? 'nothing' : 'error' in last ? `an error: ${String((last.error as Error)?.message ?? last.error)}` : inspect(last.value, { depth: 3, breakLength: Infinity });
      throw new Error(`${opts.what ?? 'condition'} not met within ${timeoutMs} ms; last saw ${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, opts.intervalMs ?? 25));
  }
}
