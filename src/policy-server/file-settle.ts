/** A file changing without pause is taken as it is after this many settle periods. */
const MAX_SETTLE_PERIODS = 20;

export interface FileSettle {
  /**
   * ms until `rel`, seen as `stamp` at `now`, counts as settled (0: now, and
   * it is forgotten). `touchedAt`: the file's own latest time stamp, if any.
   */
  left(rel: string, stamp: string, touchedAt: number | undefined, now: number): number;
  /** The file is as it was: nothing to wait for. */
  unchanged(rel: string): void;
  /** Marks a stamp this process wrote itself (whole by construction): it settles at once. */
  own(rel: string, stamp: string): void;
  /** Forgets files that are neither known nor listed any more. */
  prune(keep: (rel: string) => boolean): void;
}

/**
 * When a changed (or deleted) file of the policy folder may be read into
 * service: once it has stayed as it is for `settleMs`, by its own time stamps
 * or, with a clock far off, as seen by us; or after MAX_SETTLE_PERIODS of
 * changing without pause (then the store's rules for broken files still hold).
 * A writer that truncates and writes in pieces is never read halfway.
 */
export function createFileSettle(settleMs: number): FileSettle {
  const settling = new Map<string, { stamp: string; since: number; first: number }>();
  const ownWrites = new Map<string, string>();
  return {
    left(rel, stamp, touchedAt, now) {
      let wait = 0;
      if (settleMs > 0 && ownWrites.get(rel) !== stamp) {
        let s = settling.get(rel);
        if (!s || s.stamp !== stamp) {
          s = { stamp, since: now, first: s?.first ?? now };
          settling.set(rel, s);
        }
        const byTimestamps = touchedAt === undefined ? Number.POSITIVE_INFINITY : touchedAt + settleMs - now;
        wait = Math.max(0, Math.min(byTimestamps, s.since + settleMs - now, s.first + MAX_SETTLE_PERIODS * settleMs - now));
      }
      if (wait === 0) {
        settling.delete(rel);
        if (ownWrites.get(rel) === stamp) ownWrites.delete(rel);
      }
      return wait;
    },
    unchanged: (rel) => void settling.delete(rel),
    own: (rel, stamp) => void ownWrites.set(rel, stamp),
    prune(keep) {
      for (const rel of settling.keys()) if (!keep(rel)) settling.delete(rel);
    },
  };
}
