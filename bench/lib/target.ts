import type { ProcessGroup } from './processes.ts';

/*
 * A target is one way to reach the upstream echo server: directly or through
 * one proxy. Each is started just before it is measured and stopped right
 * after, so only the target under test (and the upstream) is running.
 */

export interface TargetContext {
  readonly group: ProcessGroup;
  /** The shared upstream app, e.g. http://127.0.0.1:40123 */
  readonly upstreamUrl: string;
  readonly upstreamPort: number;
  readonly startTimeoutMs: number;
  readonly repoRoot: string;
  readonly pathEnv: string | undefined;
}

export interface StartedTarget {
  /** Where the load generator sends requests. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  /** GET when absent; with `body`, what the pre-flight and the load generator send. */
  readonly method?: string | undefined;
  readonly body?: string | undefined;
  readonly stop: () => Promise<void>;
  /** Process group of the target's processes, for CPU accounting (bench:telemetry). */
  readonly pgid?: number | undefined;
  /** A meshgate row's admin listener, e.g. http://127.0.0.1:40125 (bench:ratelimit reads /metrics). */
  readonly adminUrl?: string | undefined;
  /** A meshgate row's time from spawning the sidecar to its first 200 on the polled admin path. */
  readonly readyMs?: number | undefined;
}

export type TargetStart = { readonly ok: true; readonly started: StartedTarget } | { readonly ok: false; readonly reason: string };

export interface Target {
  /** Stable id, used by BENCH_TARGETS and in latest.json. */
  readonly id: string;
  /** Row label in the table. */
  readonly label: string;
  readonly start: (context: TargetContext) => Promise<TargetStart>;
}
