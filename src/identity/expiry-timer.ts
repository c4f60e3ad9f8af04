import type { Clock } from '../core/clock.ts';

/** setTimeout holds at most 2^31-1 ms (~24.8 days); longer waits re-arm on the way. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Tells when the certificate in force reaches its notAfter: `watch` arms it
 * for one certificate (replacing the last), and `onExpire` runs only if that
 * certificate is still the current one then. Shared by the certificate
 * manager and a worker's relayed copy, so both fail closed at the same moment.
 */
export function createExpiryTimer<C extends { readonly facts: { readonly notAfter: Date } }>(clock: Clock, current: () => C | undefined, onExpire: () => void): { watch(c: C): void; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  const watch = (c: C): void => {
    clearTimeout(timer);
    const remaining = c.facts.notAfter.getTime() - clock.now();
    timer = setTimeout(
      () => {
        if (current() !== c) return;
        if (clock.now() < c.facts.notAfter.getTime()) watch(c);
        else onExpire();
      },
      Math.min(Math.max(0, remaining), MAX_TIMER_MS),
    );
    timer.unref();
  };
  return { watch, stop: () => clearTimeout(timer) };
}
