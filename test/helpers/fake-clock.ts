import type { Clock } from '../../src/core/clock.ts';

/** A clock that moves only when told: outlier cool-downs without waiting. */
export function createFakeClock(start = 1_000_000): Clock & { advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => start + offset,
    monotonic: () => start + offset,
    advance(ms: number) {
      offset += ms;
    },
  };
}
