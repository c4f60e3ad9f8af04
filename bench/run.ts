import { cpus, platform, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import { chooseLoadGenerator, installExitHooks, measureTarget, runBench, selectTargets, startEchoUpstream, startWatchdog, versionOf, writeReport } from './lib/harness.ts';
import { busyShare } from './lib/machine-load.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import type { RowResult } from './lib/report.ts';
import { renderTable } from './lib/report.ts';
import type { BenchSettings } from './lib/settings.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { Target } from './lib/target.ts';
import { createDirectTarget } from './lib/target-direct.ts';
import { createHttpProxyTarget } from './lib/target-http-proxy.ts';
import { createMeshgateInboundTarget, createMeshgateTwoHopTarget, createMeshgateWorkersTarget } from './lib/target-meshgate.ts';
import { createNginxTarget } from './lib/target-nginx.ts';

/*
 * npm run bench: req/s and latency through one proxy hop, next to baselines,
 * in one run with one load generator and the same settings. See bench/README.md.
 *
 * Progress goes to stderr; the table (stdout) and bench/results/latest.json are
 * the output.
 */

const RESULTS_FILE = fileURLToPath(new URL('results/latest.json', import.meta.url));

const allTargets = (settings: BenchSettings): readonly Target[] => [
  createDirectTarget(),
  createNginxTarget(),
  createHttpProxyTarget(),
  createMeshgateInboundTarget(),
  createMeshgateWorkersTarget(settings.workers),
  createMeshgateTwoHopTarget(),
];

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
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
    targets = selectTargets(allTargets(settings), settings);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${SETTINGS_HELP}\n`);
    return 2;
  }

  const group = createProcessGroup();
  const interrupt = new AbortController();
  installExitHooks(group, interrupt, log);
  startWatchdog(group, settings, targets.length, log);
  try {
    const loadgen = chooseLoadGenerator(group, settings, log);
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

    const upstream = await startEchoUpstream(group, settings);
    const context = upstream.context;

    const measured: RowResult[] = [];
    for (const target of targets) {
      // CPU of each proxy's whole process group (nginx's master and worker, a sidecar's primary and workers).
      const row = await measureTarget(target, context, loadgen, settings, log, { cpuGroups: (started) => (started.pgid === undefined ? {} : { proxy: started.pgid }) });
      // Killed children make failed rows; an interrupted run must not pass them off as results.
      if (interrupt.signal.aborted) return 130;
      measured.push(row);
    }
    await upstream.stop();

    const directRps = measured.find((r) => r.id === 'direct' && r.status === 'ok')?.rps;
    const rows = measured.map((r) => (r.rps !== undefined && directRps ? { ...r, rpsVsDirect: r.rps / directRps } : r));

    const busyNote = busy > 0.1 ? `\nwarning: the machine was ${(busy * 100).toFixed(0)}% busy before the run; figures are noisy\n` : '';
    process.stdout.write(`\n${describe}\n${busyNote}\n${renderTable(rows)}\n\n`);
    writeReport(RESULTS_FILE, { generatedAt: new Date().toISOString(), settings, environment, upstreamBodyBytes: ECHO_BODY.length, rows }, log);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

runBench('bench', main);
