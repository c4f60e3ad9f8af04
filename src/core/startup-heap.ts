import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/*
 * Gives the start-up's heap back to the OS once a sidecar has started
 * (src/cli/run-role.ts says why only the sidecar). Why: start-up (the module graph, the config, the first certificate
 * and policy snapshot) is allocation that mostly survives, so V8 grows the
 * young generation to its maximum on the way, and an idle process does no
 * mark-compact that would shrink it again: V8's memory reducer only starts
 * after one. An idle mesh sidecar kept ~9 MiB of its own pages it no longer
 * used (bench:mesh's mesh row, paired starts: RssAnon 34.7 -> 25.8 MiB; the
 * one-hop sidecar 25.4 -> 19.1; bench/README.md). A collection of the "last resort" flavour is what V8 runs on
 * a low-memory notification: it collects everything, shrinks the young
 * generation to its start size and returns pooled pages. It is paid once,
 * at the first quiet moment after start; the young generation grows back
 * under load as before.
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
export function releaseStartupHeap(): number | undefined {
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

export interface QuietWatch {
  /** How long one look at the event loop lasts. */
  readonly windowMs: number;
  /** The share of a window the loop may have been busy for it to count as quiet. */
  readonly maxUtilization: number;
  /** Windows to look through before giving up: a process busy all along needs its young generation. */
  readonly maxWindows: number;
}

/**
 * A quarter second under 2% busy; looked for during the first two minutes. An idle sidecar's loop
 * is under 1% busy; one asked for /ready every 5 ms (bench:mesh times start-up that way) used ~8%
 * of a core, and the collection must not make such a prober wait while the sidecar gets ready.
 */
const QUIET: QuietWatch = { windowMs: 250, maxUtilization: 0.02, maxWindows: 480 };

/**
 * releaseStartupHeap at the first quiet moment after start: the collection blocks the event loop
 * (29-39 ms for an idle plaintext sidecar), which should land neither on a readiness probe that
 * follows the start closely nor on traffic. `done` gets the blocked milliseconds, or undefined when
 * nothing was released (no quiet window, no gc function, or V8 refused). Returns a cancel function; the timer
 * never holds the process open.
 */
export function releaseStartupHeapWhenQuiet(done: (blockedMs: number | undefined) => void, watch: QuietWatch = QUIET): () => void {
  let previous = performance.eventLoopUtilization();
  let windows = 0;
  const timer = setInterval(() => {
    const current = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(current, previous).utilization;
    previous = current;
    windows++;
    if (busy <= watch.maxUtilization) {
      clearInterval(timer);
      done(releaseStartupHeap());
    } else if (windows >= watch.maxWindows) {
      clearInterval(timer);
      done(undefined);
    }
  }, watch.windowMs);
  timer.unref();
  return () => clearInterval(timer);
}
