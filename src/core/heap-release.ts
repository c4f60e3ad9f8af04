import { performance } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/*
 * Gives a sidecar's grown heap back to the OS when it goes quiet: once after
 * start, and again after load has grown it (src/cli/run-role.ts says why only
 * the sidecar). Why: start-up (the module graph, the config, the first
 * certificate and policy snapshot) is allocation that mostly survives, so V8
 * grows the young generation to its maximum on the way; load grows it again,
 * and the old generation with it. V8 often does not give that back by itself:
 * an idle mesh sidecar kept ~9 MiB of its own pages after start (bench:mesh's
 * mesh row, paired starts: RssAnon 34.7 -> 25.8 MiB; the one-hop sidecar 25.4
 * -> 19.1); one loaded from its start for 130 s held 74-102 MiB of its own
 * 30 s after the load, against 41-47 MiB when released (bench/README.md,
 * "Cost per pod"). A collection of the "last resort" flavour is what V8 runs
 * on a low-memory notification: it collects everything, shrinks the young
 * generation to its start size and returns pooled pages. It blocks the event
 * loop (29-39 ms idle after start, 52-130 ms after load), so it waits for a
 * quiet moment, and after the first one it comes back only when the heap has
 * grown well past what the last one left and stays so through 15 quiet
 * seconds (V8's own memory reducer often shrinks it by then), at most once
 * a minute.
 *
 * Node has no API for it. V8 reads --expose-gc when it creates a context, so
 * the gc function of a context created while the flag is set is the one route
 * from inside a running process; the flag is set back at once, so no other
 * context (and not this one's globals) gets a gc function. Anything that goes
 * wrong on the way (a V8 that refuses the options) means no release, never a
 * failed sidecar.
 */

type GcFunction = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

function gcFunction(): GcFunction | undefined {
  setFlagsFromString('--expose-gc');
  try {
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as GcFunction) : undefined;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}

/** Collects and shrinks the heap once; the milliseconds it blocked, or undefined when V8 offered no gc function or refused. */
export function releaseHeap(): number | undefined {
  try {
    const gc = gcFunction();
    if (gc === undefined) return undefined;
    const started = performance.now();
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    return performance.now() - started;
  } catch {
    return undefined;
  }
}

export interface HeapReleasePolicy {
  /** How long one look at the event loop lasts. */
  readonly windowMs: number;
  /** The share of a window the loop may have been busy for it to count as quiet. */
  readonly maxUtilization: number;
  /** How often a process released already looks whether its heap has grown back. */
  readonly checkMs: number;
  /** Growth of V8's committed heap over what the last release left that is worth another pause. */
  readonly regrowthBytes: number;
  /** The least time from one release to the next. */
  readonly minIntervalMs: number;
  /**
   * Quiet windows in a row before a release of a regrown heap, which then must still be grown: V8's
   * own memory reducer often shrinks a heap a few seconds after load, without this pause.
   */
  readonly settleWindows: number;
}

/**
 * A quarter second under 2% busy. An idle sidecar's loop is under 1% busy; one asked for /ready every
 * 5 ms (bench:mesh times start-up that way) used ~8% of a core, and the collection must not make such a
 * prober wait while the sidecar gets ready. Load that leaves 16 MiB more heap committed (a young
 * generation grown back is 8 MiB of it with the image's --max-semi-space-size=4) brings the watch back;
 * between releases the heap is looked at every 5 s (0.2 wake-ups a second). A process busy from the
 * start keeps looking (4 wake-ups a second, beside its traffic) and releases when its load ebbs.
 */
const QUIET_RELEASE: HeapReleasePolicy = {
  windowMs: 250,
  maxUtilization: 0.02,
  checkMs: 5000,
  regrowthBytes: 16 * 1024 * 1024,
  minIntervalMs: 60_000,
  // 15 s: V8's reducer shrank a mesh sidecar's heap ~6 s after 8 s of load (bench/README.md).
  settleWindows: 60,
};

export interface HeapRelease {
  /** How long the collection blocked the event loop. */
  readonly blockedMs: number;
  /** V8's committed heap before and after it. */
  readonly heapBytesBefore: number;
  readonly heapBytesAfter: number;
}

export interface HeapReleaseOptions {
  readonly policy?: HeapReleasePolicy;
  /** V8's committed heap (tests grow it without allocating). */
  readonly heapBytes?: () => number;
  readonly release?: () => number | undefined;
}

/**
 * releaseHeap at the first quiet moment after start, and when the heap has grown back by
 * policy.regrowthBytes and is still grown after policy.settleWindows quiet windows in a row (at least
 * policy.minIntervalMs apart): the collection blocks the event loop, which should land neither on a
 * readiness probe that follows the start closely nor on traffic. `released` gets each release, or
 * undefined once when V8 gave no gc function or refused (then it stops). Returns a cancel function;
 * its timers never hold the process open.
 */
export function releaseHeapWhenQuiet(released: (release: HeapRelease | undefined) => void, options: HeapReleaseOptions = {}): () => void {
  const policy = options.policy ?? QUIET_RELEASE;
  const heapBytes = options.heapBytes ?? (() => getHeapStatistics().total_heap_size);
  const release = options.release ?? releaseHeap;
  let timer: NodeJS.Timeout | undefined;
  let lastReleaseAt = 0;
  let baselineBytes = 0;

  const grown = (): boolean => heapBytes() - baselineBytes >= policy.regrowthBytes;

  /** `windows`: quiet windows in a row it takes; a `regrown` heap must still be grown after them. */
  const watchForQuiet = (windows: number, regrown: boolean): void => {
    let previous = performance.eventLoopUtilization();
    let quiet = 0;
    timer = setInterval(() => {
      const current = performance.eventLoopUtilization();
      const busy = performance.eventLoopUtilization(current, previous).utilization;
      previous = current;
      quiet = busy > policy.maxUtilization ? 0 : quiet + 1;
      if (quiet < windows) return;
      clearInterval(timer);
      if (regrown && !grown()) {
        watchForRegrowth();
        return;
      }
      const heapBytesBefore = heapBytes();
      const blockedMs = release();
      if (blockedMs === undefined) {
        released(undefined);
        return;
      }
      lastReleaseAt = performance.now();
      baselineBytes = heapBytes();
      released({ blockedMs, heapBytesBefore, heapBytesAfter: baselineBytes });
      watchForRegrowth();
    }, policy.windowMs);
    timer.unref();
  };

  const watchForRegrowth = (): void => {
    timer = setInterval(() => {
      if (performance.now() - lastReleaseAt < policy.minIntervalMs || !grown()) return;
      clearInterval(timer);
      watchForQuiet(policy.settleWindows, true);
    }, policy.checkMs);
    timer.unref();
  };

  watchForQuiet(1, false);
  return () => clearInterval(timer);
}
