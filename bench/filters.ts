import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { measureChainCost, renderChainCost } from './lib/chain-cost.ts';
import { ECHO_BODY } from './lib/echo-body.ts';
import { createFiltersPolicy } from './lib/filters-policy.ts';
import type { FiltersRow } from './lib/filters-report.ts';
import { checksSummary, filtersSummary, renderFiltersTable } from './lib/filters-report.ts';
import { createFiltersOffTarget, createFiltersOnTarget, createHmacCheckTarget, createUserCheckTarget } from './lib/filters-targets.ts';
import { chooseLoadGenerator, installExitHooks, measureTarget, runBench, selectTargets, startEchoUpstream, startWatchdog, writeReport } from './lib/harness.ts';
import { busyShare } from './lib/machine-load.ts';
import { createProcessGroup } from './lib/processes.ts';
import type { BenchSettings } from './lib/settings.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { Target } from './lib/target.ts';
import { createDirectTarget } from './lib/target-direct.ts';

/*
 * npm run bench:filters: what the per-call filters cost. req/s, p50 and p99
 * straight to the upstream, through one sidecar inbound hop with no policy,
 * and through the same hop with every per-call filter in force (ip-access,
 * JWT authn with an inline JWKS, authz ALLOW rules on path and request
 * principal), in one run with one load generator and the same settings
 * (BENCH_* as for npm run bench). Writes bench/results/filters-latest.json.
 */

const RESULTS_FILE = fileURLToPath(new URL('results/filters-latest.json', import.meta.url));

const ROWS: readonly Target[] = [createDirectTarget(), createFiltersOffTarget(), createFiltersOnTarget(), createUserCheckTarget(false), createUserCheckTarget(true), createHmacCheckTarget()];

function log(message: string): void {
  process.stderr.write(`[bench:filters] ${message}\n`);
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`usage: npm run bench:filters\n\n${SETTINGS_HELP}\n  (BENCH_TARGETS ids: ${ROWS.map((r) => r.id).join(', ')})\n`);
    return 0;
  }
  let settings: BenchSettings;
  let rowsToRun: readonly Target[];
  try {
    settings = readSettings(process.env);
    rowsToRun = selectTargets(ROWS, settings);
  } catch (err) {
    process.stderr.write(`bench:filters: ${(err as Error).message}\n\n${SETTINGS_HELP}\n`);
    return 2;
  }
  const group = createProcessGroup();
  const interrupt = new AbortController();
  installExitHooks(group, interrupt, log);
  startWatchdog(group, settings, rowsToRun.length, log);
  try {
    const loadgen = chooseLoadGenerator(group, settings, log);
    const busy = await busyShare(1000);
    const describe =
      `${loadgen.name} ${loadgen.version}, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs (median), ` +
      `${settings.warmupS}s warm-up; node ${process.version}, ${cpus().length} CPUs`;
    log(describe);
    if (busy > 0.1) log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);
    const upstream = await startEchoUpstream(group, settings);
    const context = upstream.context;
    const rows: FiltersRow[] = [];
    for (const target of rowsToRun) {
      // CPU of the sidecar's process group from /proc, per request: steadier than req/s on a shared machine.
      const row = await measureTarget(target, context, loadgen, settings, log, { cpuGroups: (started) => (started.pgid === undefined ? {} : { sidecar: started.pgid }) });
      // Killed children make failed rows; an interrupted run must not pass them off as results.
      if (interrupt.signal.aborted) return 130;
      rows.push(row);
    }
    await upstream.stop();
    log('inbound chain in process: one filter added per row');
    const chain = await measureChainCost(await createFiltersPolicy(), { runs: Math.max(3, settings.runs), calls: 20_000 });

    const summary = [filtersSummary(rows), checksSummary(rows)].filter((line) => line !== undefined).join('\n');
    const busyNote = busy > 0.1 ? `warning: the machine was ${(busy * 100).toFixed(0)}% busy before the run; figures are noisy\n` : '';
    process.stdout.write(`\n${describe}\n${busyNote}\n${renderFiltersTable(rows)}\n\n${summary ? `${summary}\n\n` : ''}${renderChainCost(chain)}\n\n`);
    const environment = { node: process.version, cpus: cpus().length, loadGenerator: `${loadgen.name} ${loadgen.version}`, busyCpuBeforeRun: busy };
    writeReport(RESULTS_FILE, { generatedAt: new Date().toISOString(), settings, environment, upstreamBodyBytes: ECHO_BODY.length, rows, chain }, log);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

runBench('bench:filters', main);
