import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, platform, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import { probe } from './lib/http-probe.ts';
import { createAutocannonGenerator } from './lib/load-autocannon.ts';
import { createWrkGenerator } from './lib/load-wrk.ts';
import type { LoadGenerator, LoadResult } from './lib/load.ts';
import { busyShare } from './lib/machine-load.ts';
import { startNodeServer } from './lib/node-server.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import type { ProcessGroup } from './lib/processes.ts';
import { renderTable } from './lib/report.ts';
import type { RowResult } from './lib/report.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { BenchSettings } from './lib/settings.ts';
import { measureRuns } from './lib/measure.ts';
import { createDirectTarget } from './lib/target-direct.ts';
import { createHttpProxyTarget } from './lib/target-http-proxy.ts';
import { createMeshgateInboundTarget, createMeshgateTwoHopTarget } from './lib/target-meshgate.ts';
import { createNginxTarget } from './lib/target-nginx.ts';
import type { Target, TargetContext } from './lib/target.ts';

/*
 * npm run bench: req/s and latency through one proxy hop, next to baselines,
 * in one run with one load generator and the same settings. See bench/README.md.
 *
 * Progress goes to stderr; the table (stdout) and bench/results/latest.json are
 * the output.
 */

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_FILE = fileURLToPath(new URL('results/latest.json', import.meta.url));

const ALL_TARGETS: readonly Target[] = [
  createDirectTarget(),
  createNginxTarget(),
  createHttpProxyTarget(),
  createMeshgateInboundTarget(),
  createMeshgateTwoHopTarget(),
];

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** On a signal: abort the run (no table, latest.json untouched), stop children, exit. */
function installExitHooks(group: ProcessGroup, interrupt: AbortController): void {
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

/** Ends the process if the whole run overruns its worst-case length by a margin. */
function startWatchdog(group: ProcessGroup, settings: BenchSettings, targetCount: number): void {
  const perTargetS = settings.startTimeoutMs / 1000 + 10 + settings.warmupS + 20 + settings.runs * (settings.durationS + 20);
  const limitS = Math.ceil(30 + targetCount * perTargetS);
  setTimeout(() => {
    log(`watchdog: run exceeded ${limitS}s, killing children`);
    group.killAllSync();
    process.exit(1);
  }, limitS * 1000).unref();
}

function versionOf(binary: string, args: readonly string[], pattern: RegExp): string {
  const result = spawnSync(binary, args, { encoding: 'utf8', timeout: 5000 });
  const text = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return pattern.exec(text)?.[1] ?? 'unknown';
}

function chooseLoadGenerator(group: ProcessGroup, settings: BenchSettings): LoadGenerator {
  const wrk = findExecutable('wrk', process.env['PATH']);
  if (settings.loadGenerator === 'wrk' && wrk === undefined) throw new Error('BENCH_LOADGEN=wrk but wrk is not installed (apt-get install -y wrk)');
  if (wrk !== undefined && settings.loadGenerator !== 'autocannon') {
    return createWrkGenerator(group, wrk, versionOf(wrk, ['-v'], /^wrk\s+(\S+)/m));
  }
  if (wrk === undefined) log('wrk not found; using autocannon (figures are not comparable with wrk runs)');
  return createAutocannonGenerator();
}

function selectTargets(settings: BenchSettings): readonly Target[] {
  if (settings.targets === undefined) return ALL_TARGETS;
  const known = new Set(ALL_TARGETS.map((t) => t.id));
  const unknown = settings.targets.filter((id) => !known.has(id));
  if (unknown.length > 0) throw new Error(`BENCH_TARGETS: unknown ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  return ALL_TARGETS.filter((t) => settings.targets!.includes(t.id));
}

async function measureTarget(target: Target, context: TargetContext, loadgen: LoadGenerator, settings: BenchSettings): Promise<RowResult> {
  const base = { id: target.id, label: target.label, runs: [] as LoadResult[] };
  log(`${target.id}: starting`);
  const start = await target.start(context);
  if (!start.ok) {
    log(`${target.id}: skipped (${start.reason})`);
    return { ...base, status: 'skipped', reason: start.reason };
  }
  const { url, headers, stop } = start.started;
  try {
    // A proxy that answers, but not with the upstream's body, would make every figure meaningless.
    try {
      const res = await probe(url, headers, 3000);
      if (res.status !== 200 || res.body !== ECHO_BODY) {
        const reason = `pre-flight GET ${url} got HTTP ${res.status}, body ${JSON.stringify(res.body.slice(0, 120))}`;
        log(`${target.id}: failed (${reason})`);
        return { ...base, status: 'failed', reason };
      }
    } catch (err) {
      const reason = `pre-flight GET ${url}: ${(err as Error).message}`;
      log(`${target.id}: failed (${reason})`);
      return { ...base, status: 'failed', reason };
    }
    const request = { url, headers, connections: settings.connections };
    const measured = await measureRuns(loadgen, request, settings, target.id, log);
    return { ...base, status: 'ok', ...measured };
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0] ?? 'error';
    log(`${target.id}: failed (${reason})`);
    return { ...base, status: 'failed', reason };
  } finally {
    await stop();
  }
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`usage: npm run bench\n\n${SETTINGS_HELP}\n`);
    return 0;
  }
  let settings: BenchSettings;
  let targets: readonly Target[];
  try {
    settings = readSettings(process.env);
    targets = selectTargets(settings);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${SETTINGS_HELP}\n`);
    return 2;
  }

  const group = createProcessGroup();
  const interrupt = new AbortController();
  installExitHooks(group, interrupt);
  startWatchdog(group, settings, targets.length);
  try {
    const loadgen = chooseLoadGenerator(group, settings);
    const nginx = findExecutable('nginx', process.env['PATH']);
    const busy = await busyShare(1000);
    const environment = {
      busyCpuBeforeRun: Math.round(busy * 1000) / 1000,
      node: process.version,
      nginx: nginx === undefined ? 'not installed' : versionOf(nginx, ['-v'], /nginx\/(\S+)/),
      loadGenerator: `${loadgen.name} ${loadgen.version}`,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      os: `${platform()} ${release()}`,
    };
    const describe =
      `${loadgen.name} ${loadgen.version}, 1 thread, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs ` +
      `(median), ${settings.warmupS}s warm-up; node ${environment.node}, nginx ${environment.nginx}, ${environment.cpus} CPUs`;
    log(describe);
    if (busy > 0.1) {
      log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);
    }

    const upstream = await startNodeServer(group, 'upstream', 'echo.ts', [], 10_000);
    const context: TargetContext = {
      group,
      upstreamUrl: `http://127.0.0.1:${upstream.port}`,
      upstreamPort: upstream.port,
      startTimeoutMs: settings.startTimeoutMs,
      repoRoot: REPO_ROOT,
      pathEnv: process.env['PATH'],
    };

    const measured: RowResult[] = [];
    for (const target of targets) {
      const row = await measureTarget(target, context, loadgen, settings);
      // Killed children make failed rows; an interrupted run must not pass them off as results.
      if (interrupt.signal.aborted) return 130;
      measured.push(row);
    }
    await upstream.child.stop();

    const directRps = measured.find((r) => r.id === 'direct' && r.status === 'ok')?.rps;
    const rows = measured.map((r) => (r.rps !== undefined && directRps ? { ...r, rpsVsDirect: r.rps / directRps } : r));

    const busyNote = busy > 0.1 ? `\nwarning: the machine was ${(busy * 100).toFixed(0)}% busy before the run; figures are noisy\n` : '';
    process.stdout.write(`\n${describe}\n${busyNote}\n${renderTable(rows)}\n\n`);
    mkdirSync(fileURLToPath(new URL('results/', import.meta.url)), { recursive: true });
    const report = { generatedAt: new Date().toISOString(), settings, environment, upstreamBodyBytes: ECHO_BODY.length, rows };
    writeFileSync(RESULTS_FILE, `${JSON.stringify(report, null, 2)}\n`);
    log(`wrote ${RESULTS_FILE}`);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
