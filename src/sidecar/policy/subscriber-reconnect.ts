import { backoffDelay } from '../../core/backoff.ts';
import type { Random } from '../../core/clock.ts';

export interface ReconnectPlan {
  /** Index into the server list of the next attempt. */
  readonly next: number;
  readonly delayMs: number;
}

/**
 * Where and when the policy stream reconnects. Every attempt moves to the
 * next replica: after a failure because that one is away, after a synced
 * stream ended because the replica may be going away (a rollout).
 *
 * - A synced stream ended: a short jittered pause (under `baseMs`), then the next replica.
 * - A failure while other replicas are untried in this round: the same short pause,
 *   so failover takes well under a second yet a fleet does not move in lockstep.
 * - Every replica failed in this round: exponential backoff with full jitter,
 *   plus `baseMs` so a round is never retried in a tight loop.
 */
export function planReconnect(
  state: { readonly servers: number; readonly current: number; readonly synced: boolean; readonly failuresInRow: number },
  backoff: { readonly baseMs: number; readonly maxMs: number },
  random: Random,
): ReconnectPlan {
  const next = (state.current + 1) % state.servers;
  const pause = Math.floor(random() * backoff.baseMs);
  if (state.synced || state.failuresInRow % state.servers !== 0) return { next, delayMs: pause };
  const rounds = state.failuresInRow / state.servers;
  return { next, delayMs: backoffDelay(rounds, backoff, random) + backoff.baseMs };
}
