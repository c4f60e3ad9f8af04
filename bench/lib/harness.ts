import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './echo-body.ts';
import { probe } from './http-probe.ts';
import type { LoadGenerator, LoadResult } from './load.ts';
import { createAutocannonGenerator } from './load-autocannon.ts';
import { createWrkGenerator } from './load-wrk.ts';
import { measureRuns } from './measure.ts';
import { startNodeServer } from './node-server.ts';
import type { ProcessGroup } from './processes.ts';
import { findExecutable } from './processes.ts';
import type { BenchSettings } from './settings.ts';
import type { StartedTarget, Target, TargetContext } from './target.ts';
import { groupCpuMs } from './tls-cpu.ts';

/*
 * The pieces every wrk-driven bench entry (run.ts, filters.ts, ratelimit.ts)
 * shares: picking the load generator, exit hooks and watchdog, the echo
 * upstream and target context, measuring one row (start, pre-flight, warm-up
 * + runs, stop), writing the report and the process exit code.
 */

export type Log = (message: string) => void;

export function versionOf(binary: string, args: readonly string[], pattern: RegExp): string {
  const result = spawnSync(binary, args, { encoding: 'utf8', timeout: 5000 });
  const text = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return pattern.exec(text)?.[1] ?? 'unknown';
}

/** The rows BENCH_TARGETS names, in the built-in order; throws on an unknown id. */
export function selectTargets(all: readonly Target[], settings: BenchSettings): readonly Target[] {
  if (settings.targets === undefined) return all;
  const known = new Set(all.map((t) => t.id));
  const unknown = settings.targets.filter((id) => !known.has(id));
  if (unknown.length > 0) throw new Error(`BENCH_TARGETS: unknown ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  return all.filter((t) => settings.targets!.includes(t.id));
}

/** wrk when installed (or forced), else autocannon in this process. */
export function chooseLoadGenerator(group: ProcessGroup, settings: BenchSettings, log: Log): LoadGenerator {
  const wrk = findExecutable('wrk', process.env['PATH']);
  if (settings.loadGenerator === 'wrk' && wrk === undefined) throw new Error('BENCH_LOADGEN=wrk but wrk is not installed (apt-get install -y wrk)');
  if (wrk !== undefined && settings.loadGenerator !== 'autocannon') {
    return createWrkGenerator(group, wrk, versionOf(wrk, ['-v'], /^wrk\s+(\S+)/m));
  }
  if (wrk === undefined) log('wrk not found; using autocannon (figures are not comparable with wrk runs)');
  return createAutocannonGenerator();
}

/** On a signal: abort the run (no table, results file untouched), stop children, exit. */
export function installExitHooks(group: ProcessGroup, interrupt: AbortController, log: Log): void {
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    if (interrupt.signal.aborted) {
      // Second Ctrl-C: do not wait for anything.
      group.killAllSync();
      process.exit(code);
    }
    interrupt.abort();
    log(`${signal}: stopping children`);
    void group.stopAll(1000).finally(() => process.exit(code));
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));
  process.on('SIGHUP', () => onSignal('SIGHUP', 129));
  // Whatever else ends the process (a throw, process.exit) still takes the children with it.
  process.on('exit', () => group.killAllSync());
}

/** Ends the process if the run overruns its worst-case length (rows plus `extraS`) by a margin. */
export function startWatchdog(group: ProcessGroup, settings: BenchSettings, targetCount: number, log: Log, extraS = 0): void {
  const perTargetS = settings.startTimeoutMs / 1000 + 10 + settings.warmupS + 20 + settings.runs * (settings.durationS + 20);
  const limitS = Math.ceil(30 + extraS + targetCount * perTargetS);
  setTimeout(() => {
    log(`watchdog: run exceeded ${limitS}s, killing children`);
    group.killAllSync();
    process.exit(1);
  }, limitS * 1000).unref();
}

export interface MeasuredRow {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  /** Why the row has no figures (skipped/failed). */
  readonly reason?: string;
  /** Medians of the measured runs. */
  readonly rps?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly runs: readonly LoadResult[];
  /** CPU microseconds per request of each accounted process group, over the measured runs. */
  readonly cpuUsPerRequest?: Readonly<Record<string, number>>;
  /** What `inspect` found after the runs. */
  readonly notes?: readonly string[];
}

export interface MeasureOptions {
  /** Process groups whose CPU time is divided by the requests of the measured runs (Linux /proc). */
  readonly cpuGroups?: (started: StartedTarget) => Readonly<Record<string, number | undefined>>;
  /** Runs once the pre-flight request was answered, before the warm-up: the target as fresh as a just-started one. */
  readonly afterPreflight?: (started: StartedTarget) => Promise<void>;
  /** Runs after the warm-up, right before the measured runs (e.g. to reset a server's counters). */
  readonly beforeRuns?: (started: StartedTarget) => Promise<void>;
  /** Runs after the measured runs, before the target stops; its lines go to the row's notes. */
  readonly inspect?: (started: StartedTarget, runs: readonly LoadResult[]) => Promise<readonly string[]>;
}

/**
 * One row: start the target, check that one request gets the upstream's body
 * (a proxy that answers something else would make every figure meaningless),
 * warm-up and measured runs, stop. Never throws: a broken target is a row
 * that says why.
 */
export async function measureTarget(target: Target, context: TargetContext, loadgen: LoadGenerator, settings: BenchSettings, log: Log, options: MeasureOptions = {}): Promise<MeasuredRow> {
  const base = { id: target.id, label: target.label, runs: [] as LoadResult[] };
  const failed = (reason: string): MeasuredRow => {
    log(`${target.id}: failed (${reason})`);
    return { ...base, status: 'failed', reason };
  };
  log(`${target.id}: starting`);
  let start;
  try {
    start = await target.start(context);
  } catch (err) {
    return failed((err as Error).message.split('\n')[0] ?? 'error');
  }
  if (!start.ok) {
    log(`${target.id}: skipped (${start.reason})`);
    return { ...base, status: 'skipped', reason: start.reason };
  }
  const started = start.started;
  const { url, headers, method, body } = started;
  try {
    try {
      const res = await probe(url, headers, 3000, { method, body });
      if (res.status !== 200 || res.body !== ECHO_BODY) {
        return failed(`pre-flight ${method ?? 'GET'} ${url} got HTTP ${res.status}, body ${JSON.stringify(res.body.slice(0, 120))}`);
      }
    } catch (err) {
      return failed(`pre-flight ${method ?? 'GET'} ${url}: ${(err as Error).message}`);
    }
    const request = { url, headers, method, body, connections: settings.connections };
    await options.afterPreflight?.(started);
    if (!options.cpuGroups && !options.beforeRuns) {
      const measured = await measureRuns(loadgen, request, settings, target.id, log);
      const notes = options.inspect ? await options.inspect(started, measured.runs) : undefined;
      return { ...base, status: 'ok', ...measured, ...(notes ? { notes } : {}) };
    }
    // Warm-up outside the CPU accounting and beforeRuns, so they cover the measured runs only.
    if (settings.warmupS > 0) {
      log(`${target.id}: warm-up ${settings.warmupS}s`);
      await loadgen.run({ ...request, durationS: settings.warmupS });
    }
    await options.beforeRuns?.(started);
    const groups = options.cpuGroups?.(started) ?? {};
    const before = Object.fromEntries(Object.entries(groups).map(([name, pgid]) => [name, groupCpuMs(pgid)]));
    const measured = await measureRuns(loadgen, request, { ...settings, warmupS: 0 }, target.id, log);
    const requests = measured.runs.reduce((sum, r) => sum + r.requests, 0);
    const cpuUsPerRequest: Record<string, number> = {};
    for (const [name, pgid] of Object.entries(groups)) {
      const after = groupCpuMs(pgid);
      const was = before[name];
      if (after !== undefined && was !== undefined && requests > 0) cpuUsPerRequest[name] = ((after - was) * 1000) / requests;
    }
    const notes = options.inspect ? await options.inspect(started, measured.runs) : undefined;
    return { ...base, status: 'ok', ...measured, cpuUsPerRequest, ...(notes ? { notes } : {}) };
  } catch (err) {
    return failed((err as Error).message.split('\n')[0] ?? 'error');
  } finally {
    await started.stop();
  }
}

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The echo upstream every HTTP row proxies to, and the context targets start in. */
export async function startEchoUpstream(group: ProcessGroup, settings: BenchSettings): Promise<{ context: TargetContext; stop: () => Promise<void> }> {
  const upstream = await startNodeServer(group, 'upstream', 'echo.ts', [], 10_000);
  return {
    context: {
      group,
      upstreamUrl: `http://127.0.0.1:${upstream.port}`,
      upstreamPort: upstream.port,
      startTimeoutMs: settings.startTimeoutMs,
      repoRoot: REPO_ROOT,
      pathEnv: process.env['PATH'],
    },
    stop: () => upstream.child.stop(),
  };
}

/** Writes a bench's report as JSON (bench/results/ is created when missing). */
export function writeReport(file: string, report: object, log: Log): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  log(`wrote ${file}`);
}

/** Runs a bench entry point and exits with its code; an unexpected error exits 1 with its stack. */
export function runBench(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
