import { describe, expect, it } from 'vitest';
import { planReconnect } from '../../../../src/sidecar/policy/subscriber-reconnect.ts';

const backoff = { baseMs: 500, maxMs: 30_000 };
const top = () => 0.999_999;

describe('policy stream reconnect plan', () => {
  it('after a failure moves to the next replica within base, while the round has untried replicas', () => {
    expect(planReconnect({ servers: 3, current: 0, synced: false, failuresInRow: 1 }, backoff, top)).toEqual({ next: 1, delayMs: 499 });
    expect(planReconnect({ servers: 3, current: 1, synced: false, failuresInRow: 2 }, backoff, () => 0)).toEqual({ next: 2, delayMs: 0 });
  });

  it('backs off exponentially (full jitter, plus base) once every replica failed in the round, capped at max', () => {
    expect(planReconnect({ servers: 2, current: 1, synced: false, failuresInRow: 2 }, backoff, top)).toEqual({ next: 0, delayMs: 999 + 500 });
    expect(planReconnect({ servers: 2, current: 1, synced: false, failuresInRow: 4 }, backoff, top)).toEqual({ next: 0, delayMs: 1_999 + 500 });
    expect(planReconnect({ servers: 2, current: 1, synced: false, failuresInRow: 40 }, backoff, top)).toEqual({ next: 0, delayMs: 29_999 + 500 });
    expect(planReconnect({ servers: 1, current: 0, synced: false, failuresInRow: 1 }, backoff, () => 0)).toEqual({ next: 0, delayMs: 500 });
  });

  it('after a synced stream ends, goes to the next replica after a short jittered pause', () => {
    expect(planReconnect({ servers: 2, current: 1, synced: true, failuresInRow: 0 }, backoff, () => 0.5)).toEqual({ next: 0, delayMs: 250 });
    expect(planReconnect({ servers: 1, current: 0, synced: true, failuresInRow: 0 }, backoff, () => 0.5)).toEqual({ next: 0, delayMs: 250 });
  });
});
