import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
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
import { measureRequestBytesCost } from './lib/request-bytes-cost.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { BenchSettings } from './lib/settings.ts';
import { median, spread } from './lib/stats.ts';
import { createTelemetryTarget } from './lib/target-meshgate-telemetry.ts';
import type { Target, TargetContext } from './lib/target.ts';

/*
 * npm run bench:telemetry: what tracing, access logging and metrics cost.
 * One sidecar, outbound -> inbound -> upstream (so each request makes a
 * client span and a server span, two access log lines and two metric
 * updates), with telemetry all off, each kind alone, and all on, in one run
 * with one load generator and the same settings (BENCH_* as for npm run
 * bench). Then the cost of counting request body bytes, in process.
 * Writes bench/results/telemetry-latest.json.
 */

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_FILE = fileURLToPath(new URL('results/telemetry-latest.json', import.meta.url));

let sinkUrl = '';
const ROWS: readonly Target[] = [
  createTelemetryTarget('off', 'telemetry off', { metrics: false, accessLog: false, tracing: undefined }, () => sinkUrl),
  createTelemetryTarget('metrics', 'metrics only', { metrics: true, accessLog: false, tracing: undefined }, () => sinkUrl),
  createTelemetryTarget('access-log', 'access log only', { metrics: false, accessLog: true, tracing: undefined }, () => sinkUrl),
  createTelemetryTarget('tracing', 'tracing only (every call sampled)', { metrics: false, accessLog: false, tracing: 1 }, () => sinkUrl),
  createTelemetryTarget('all', 'all on (every call traced and logged)', { metrics: true, accessLog: true, tracing: 1 }, () => sinkUrl),
  createTelemetryTarget('all-sampled', 'all on, 1% of traces and of access lines', { metrics: true, accessLog: true, tracing: 0.01, logSampling: 0.01 }, () => sinkUrl),
];

interface Row {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  readonly reason?: string;
  readonly rps?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly runs: readonly LoadResult[];
}

function log(message: string): void {
  process.stderr.write(`[bench:telemetry] ${message}\n`);
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

async function measure(target: Target, context: TargetContext, loadgen: LoadGenerator, settings: BenchSettings): Promise<Row> {
  const base = { id: target.id, label: target.label, runs: [] as LoadResult[] };
  const start = await target.start(context);
  if (!start.ok) {
    log(`${target.id}: skipped (${start.reason})`);
    return { ...base, status: 'skipped', reason: start.reason };
  }
  const { url, headers, stop } = start.started;
  try {
    const res = await probe(url, headers, 3000);
    if (res.status !== 200 || res.body !== ECHO_BODY) return { ...base, status: 'failed', reason: `pre-flight got HTTP ${res.status}` };
    const request = { url, headers, connections: settings.connections };
    if (settings.warmupS > 0) await loadgen.run({ ...request, durationS: settings.warmupS });
    const runs: LoadResult[] = [];
    for (let i = 1; i <= settings.runs; i++) {
      const result = await loadgen.run({ ...request, durationS: settings.durationS });
      runs.push(result);
      log(`${target.id}: run ${i}/${settings.runs}: ${Math.round(result.rps)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms`);
    }
    return {
      ...base,
      status: 'ok',
      runs,
      rps: median(runs.map((r) => r.rps)),
      p50Ms: median(runs.map((r) => r.p50Ms)),
      p99Ms: median(runs.map((r) => r.p99Ms)),
    };
  } catch (err) {
    return { ...base, status: 'failed', reason: (err as Error).message.split('\n')[0] ?? 'error' };
  } finally {
    await stop();
  }
}

function table(rows: readonly Row[]): string {
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const header = ['telemetry', 'req/s', 'vs off', 'p50 ms', 'p99 ms', 'p99 vs off', 'notes'];
  const body = rows.map((r) => {
    if (r.status !== 'ok') return [r.label, '-', '-', '-', '-', '-', `${r.status}: ${r.reason ?? ''}`];
    const failed = r.runs.reduce((n, x) => n + x.errors + x.non2xx, 0);
    const notes = [r.runs.length > 1 ? `req/s spread ${(spread(r.runs.map((x) => x.rps)) * 100).toFixed(1)}%` : '', failed > 0 ? `${failed} failed responses` : '']
      .filter(Boolean)
      .join('; ');
    return [
      r.label,
      Math.round(r.rps!).toLocaleString('en-US'),
      off ? `${(((r.rps! - off.rps!) / off.rps!) * 100).toFixed(1)}%` : 'n/a',
      r.p50Ms!.toFixed(2),
      r.p99Ms!.toFixed(2),
      off ? `${r.p99Ms! >= off.p99Ms! ? '+' : ''}${(r.p99Ms! - off.p99Ms!).toFixed(2)} ms` : 'n/a',
      notes,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i > 0 && i < 6 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  return [line(header), `| ${widths.map((w, i) => (i > 0 && i < 6 ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`, ...body.map(line)].join('\n');
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`usage: npm run bench:telemetry\n\n${SETTINGS_HELP}\n  (BENCH_TARGETS ids: ${ROWS.map((r) => r.id).join(', ')})\n`);
    return 0;
  }
  const settings = readSettings(process.env);
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
  }, (120 + rowsToRun.length * perRowS) * 1000).unref();
  try {
    const loadgen = chooseLoadGenerator(group, settings);
    const busy = await busyShare(1000);
    const describe = `${loadgen.name} ${loadgen.version}, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs (median), ${settings.warmupS}s warm-up; node ${process.version}, ${cpus().length} CPUs`;
    log(describe);
    if (busy > 0.1) log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);
    const upstream = await startNodeServer(group, 'upstream', 'echo.ts', [], 10_000);
    const sink = await startNodeServer(group, 'otlp-sink', 'otlp-sink.ts', [], 10_000);
    sinkUrl = `http://127.0.0.1:${sink.port}`;
    const context: TargetContext = {
      group,
      upstreamUrl: `http://127.0.0.1:${upstream.port}`,
      upstreamPort: upstream.port,
      startTimeoutMs: settings.startTimeoutMs,
      repoRoot: REPO_ROOT,
      pathEnv: process.env['PATH'],
    };
    const rows: Row[] = [];
    for (const target of rowsToRun) rows.push(await measure(target, context, loadgen, settings));
    const exported = await probe(`${sinkUrl}/stats`, {}, 2000).then((r) => JSON.parse(r.body) as { requests: number; bytes: number });
    await upstream.child.stop();
    await sink.child.stop();

    log('request body byte counting, in process (16 KiB chunks)');
    const bytesCost = await measureRequestBytesCost();
    const bytesTable = [
      '| counting request bytes | ns per 16 KiB chunk | added |',
      '| --- | ---: | ---: |',
      `| none (baseline) | ${bytesCost.plainNs.toFixed(0)} | - |`,
      `| the request's own push, wrapped (what the sidecar does) | ${bytesCost.wrappedPushNs.toFixed(0)} | ${(bytesCost.wrappedPushNs - bytesCost.plainNs).toFixed(0)} ns |`,
      `| a counting PassThrough piped in between (avoided) | ${bytesCost.passThroughNs.toFixed(0)} | ${(bytesCost.passThroughNs - bytesCost.plainNs).toFixed(0)} ns |`,
    ].join('\n');

    process.stdout.write(`\n${describe}\n${busy > 0.1 ? `warning: the machine was ${(busy * 100).toFixed(0)}% busy before the run\n` : ''}\n${table(rows)}\n\n${bytesTable}\n\n`);
    process.stdout.write(`The OTLP sink received ${exported.requests} export requests (${(exported.bytes / 1024 / 1024).toFixed(1)} MiB).\n`);
    mkdirSync(fileURLToPath(new URL('results/', import.meta.url)), { recursive: true });
    writeFileSync(
      RESULTS_FILE,
      `${JSON.stringify({ generatedAt: new Date().toISOString(), settings, environment: { node: process.version, cpus: cpus().length, loadGenerator: `${loadgen.name} ${loadgen.version}`, busyCpuBeforeRun: busy }, rows, requestBytesCounting: bytesCost, otlpSink: exported }, null, 2)}\n`,
    );
    log(`wrote ${RESULTS_FILE}`);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:telemetry: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
