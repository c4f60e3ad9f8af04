import type { Clock } from './clock.ts';

/**
 * At most one log line per key per interval, so a flood (every call limited,
 * every call to a deprecated version, a full table evicting on every call)
 * does not become a log flood; the line that passes says how many were held
 * back. Keys must come from configuration or policy, never from requests:
 * the map grows with them.
 */
export interface LogGate {
  /** undefined: hold this line back; otherwise the lines held back for `key` since the last one that passed. */
  pass(key?: string): number | undefined;
}

export function createLogGate(clock: Clock, intervalMs: number): LogGate {
  const states = new Map<string, { passedAt: number; heldBack: number }>();
  return {
    pass(key = '') {
      const now = clock.monotonic();
      const state = states.get(key);
      if (!state) {
        states.set(key, { passedAt: now, heldBack: 0 });
        return 0;
      }
      if (now - state.passedAt < intervalMs) {
        state.heldBack++;
        return undefined;
      }
      const heldBack = state.heldBack;
      state.passedAt = now;
      state.heldBack = 0;
      return heldBack;
    },
  };
}
