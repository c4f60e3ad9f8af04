import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import { filtersSummary, renderFiltersTable } from './lib/filters-report.ts';
import type { FiltersRow } from './lib/filters-report.ts';
import { createFiltersOffTarget, createFiltersOnTarget } from './lib/filters-targets.ts';
import { probe } from './lib/http-probe.ts';
import { createAutocannonGenerator } from './lib/load-autocannon.ts';
import { createWrkGenerator } from './lib/load-wrk.ts';
import type { LoadGenerator, LoadResult } from './lib/load.ts';
import { busyShare } from './lib/machine-load.ts';
import { startNodeServer } from './lib/node-server.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import type { ProcessGroup } from './lib/processes.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { BenchSettings } from './lib/settings.ts';
import { measureRuns } from './lib/measure.ts';
import { createDirectTarget } from './lib/target-direct.ts';
import type { Target, TargetContext } from './lib/target.ts';

/*
 * npm run bench:filters: what the per-call filters cost. req/s, p50 and p99
 * straight to the upstream, through one sidecar inbound hop with no policy,
 * and through the same hop with every per-call filter in force (ip-access,
 * JWT authn with an inline JWKS, authz ALLOW rules on path and request
 * principal), in one run with one load generator and the same settings
 * (BENCH_* as for npm run bench). Writes bench/results/filters-latest.json.
 */

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_FILE = fileURLToPath(new URL('results/filters-latest.json', import.meta.url));

const ROWS: readonly Target[] = [createDirectTarget(), createFiltersOffTarget(), createFiltersOnTarget()];

function log(message: string): void {
  process.stderr.write(`[bench:filters] ${message}\n`);
}

function chooseLoadGenerator(group: ProcessGroup, settings: BenchSettings): LoadGenerator {
  const wrk = findExecutable('wrk', process.env['PATH']);
  if (settings.loadGenerator === 'wrk' && wrk === undefined) throw new Error('BENCH_LOADGEN=wrk but wrk is not installed (apt-get install -y wrk)');
  if (wrk !== undefined && settings.loadGenerator !== 'autocannon') {
    const version = /^wrk\s+(\S+)/m.exec(spawnSync(wrk, ['-v'], { encoding: 'utf8', timeout: 5000 }).stdout ?? '')?.[1] ?? 'unknown';
    return createWrkGenerator(group, wrk, version);
  }
  log('wrk not found; using autocannon (figures are not comparable with wrk runs)');
  return createAutocannonGenerator();
}

async function measure(target: Target, context: TargetContext, loadgen: LoadGenerator, settings: BenchSettings): Promise<FiltersRow> {
  const base = { id: target.id, label: target.label, runs: [] as LoadResult[] };
  log(`${target.id}: starting`);
  let start;
  try {
    start = await target.start(context);
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0] ?? 'error';
    log(`${target.id}: failed (${reason})`);
    return { ...base, status: 'failed', reason };
  }
  if (!start.ok) {
    log(`${target.id}: skipped (${start.reason})`);
    return { ...base, status: 'skipped', reason: start.reason };
  }
  const { url, headers, stop } = start.started;
  try {
    // The load request itself must pass every filter and reach the upstream.
    const res = await probe(url, headers, 3000);
    if (res.status !== 200 || res.body !== ECHO_BODY) {
      const reason = `pre-flight GET ${url} got HTTP ${res.status}, body ${JSON.stringify(res.body.slice(0, 120))}`;
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
    process.stdout.write(`usage: npm run bench:filters\n\n${SETTINGS_HELP}\n  (BENCH_TARGETS ids: ${ROWS.map((r) => r.id).join(', ')})\n`);
    return 0;
  }
  let settings: BenchSettings;
  try {
    settings = readSettings(process.env);
  } catch (err) {
    process.stderr.write(`bench:filters: ${(err as Error).message}\n\n${SETTINGS_HELP}\n`);
    return 2;
  }
  const rowsToRun = settings.targets ? ROWS.filter((r) => settings.targets!.includes(r.id)) : ROWS;
  const group = createProcessGroup();
  process.on('SIGINT', () => void group.stopAll(1000).finally(() => process.exit(130)));
  process.on('SIGTERM', () => void group.stopAll(1000).finally(() => process.exit(143)));
  process.on('exit', () => group.killAllSync());
  const perRowS = settings.startTimeoutMs / 1000 + 10 + settings.warmupS + 20 + settings.runs * (settings.durationS + 20);
  setTimeout(() => {
    log('watchdog: run overran; stopping');
    group.killAllSync();
    process.exit(1);
  }, (60 + rowsToRun.length * perRowS) * 1000).unref();
  try {
    const loadgen = chooseLoadGenerator(group, settings);
    const busy = await busyShare(1000);
    const describe =
      `${loadgen.name} ${loadgen.version}, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs (median), ` +
      `${settings.warmupS}s warm-up; node ${process.version}, ${cpus().length} CPUs`;
    log(describe);
    if (busy > 0.1) log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);
    const upstream = await startNodeServer(group, 'upstream', 'echo.ts', [], 10_000);
    const context: TargetContext = {
      group,
      upstreamUrl: `http://127.0.0.1:${upstream.port}`,
      upstreamPort: upstream.port,
      startTimeoutMs: settings.startTimeoutMs,
      repoRoot: REPO_ROOT,
      pathEnv: process.env['PATH'],
    };
    const rows: FiltersRow[] = [];
    for (const target of rowsToRun) rows.push(await measure(target, context, loadgen, settings));
    await upstream.child.stop();

    const summary = filtersSummary(rows);
    const busyNote = busy > 0.1 ? `warning: the machine was ${(busy * 100).toFixed(0)}% busy before the run; figures are noisy\n` : '';
    process.stdout.write(`\n${describe}\n${busyNote}\n${renderFiltersTable(rows)}\n\n${summary ? `${summary}\n\n` : ''}`);
    mkdirSync(fileURLToPath(new URL('results/', import.meta.url)), { recursive: true });
    const environment = { node: process.version, cpus: cpus().length, loadGenerator: `${loadgen.name} ${loadgen.version}`, busyCpuBeforeRun: busy };
    writeFileSync(RESULTS_FILE, `${JSON.stringify({ generatedAt: new Date().toISOString(), settings, environment, upstreamBodyBytes: ECHO_BODY.length, rows }, null, 2)}\n`);
    log(`wrote ${RESULTS_FILE}`);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:filters: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
