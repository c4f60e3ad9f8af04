import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { runBackgroundLoop } from '../../../src/core/background-loop.ts';

describe('runBackgroundLoop', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const backoff = { baseMs: 100, maxMs: 1_000 };

  it('keeps retrying a failing step with a growing, capped, jittered backoff, and resumes its own pace after a success', async () => {
    const controller = new AbortController();
    const runsAt: number[] = [];
    const errors: Array<[number, number]> = [];
    let failuresLeft = 6;
    const done = runBackgroundLoop(
      async () => {
        runsAt.push(Date.now());
        if (failuresLeft-- > 0) throw new Error('CA unreachable');
        return 5_000;
      },
      { signal: controller.signal, firstDelayMs: 1_000, backoff, random: () => 1, onError: (_err, n, retryInMs) => errors.push([n, retryInMs]) },
    );
    const start = Date.now();
    await vi.advanceTimersByTimeAsync(11_000);
    // random() = 1: the ceiling itself, plus base: 200+100, 400+100, 800+100, then capped 1000+100.
    expect(errors).toEqual([
      [1, 300],
      [2, 500],
      [3, 900],
      [4, 1_100],
      [5, 1_100],
      [6, 1_100],
    ]);
    expect(runsAt.map((t) => t - start)).toEqual([1_000, 1_300, 1_800, 2_700, 3_800, 4_900, 6_000, 11_000]);
    controller.abort();
    await done;
  });

  it('waits no longer after a failure than maxRetryDelayMs allows', async () => {
    const controller = new AbortController();
    const errors: number[] = [];
    const done = runBackgroundLoop(
      async () => {
        throw new Error('no');
      },
      { signal: controller.signal, backoff: { baseMs: 10_000, maxMs: 60_000 }, random: () => 1, maxRetryDelayMs: () => 250, onError: (_err, _n, retryInMs) => errors.push(retryInMs) },
    );
    await vi.advanceTimersByTimeAsync(1_000);
    expect(errors).toEqual([250, 250, 250, 250, 250]);
    controller.abort();
    await done;
  });

  it('ends when its signal aborts, during a wait or a step, and runs no step after that', async () => {
    const controller = new AbortController();
    let runs = 0;
    const done = runBackgroundLoop(
      async () => {
        runs++;
        return 60_000;
      },
      { signal: controller.signal, backoff, random: () => 0.5, onError: () => {} },
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(1);
    controller.abort();
    await done;
    await vi.advanceTimersByTimeAsync(120_000);
    expect(runs).toBe(1);
  });

  it("waits past setTimeout's 24.8-day ceiling without firing early", async () => {
    const controller = new AbortController();
    let runs = 0;
    const thirtyDays = 30 * 24 * 3600 * 1000;
    const done = runBackgroundLoop(
      async () => {
        runs++;
        return thirtyDays;
      },
      { signal: controller.signal, backoff, random: () => 0.5, onError: () => {} },
    );
    await vi.advanceTimersByTimeAsync(thirtyDays - 1);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toBe(2);
    controller.abort();
    await done;
  });
});
