import { afterEach } from 'vitest';

/**
 * What a test starts and must stop, stopped after it: returns `defer`, whose
 * cleanups run after each test, the last deferred first. Call once, at the
 * top level of a test file.
 */
export function deferAfterEach(): (cleanup: () => unknown) => void {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return (cleanup) => void cleanups.push(cleanup);
}
