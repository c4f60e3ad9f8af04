import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import { startEchoUpstream } from './lib/harness.ts';
import { probe } from './lib/http-probe.ts';
import type { LoadGenerator, LoadResult } from './lib/load.ts';
import { createAutocannonGenerator } from './lib/load-autocannon.ts';
import { createWrkGenerator } from './lib/load-wrk.ts';
import { busyShare } from './lib/machine-load.ts';
import { startNodeServer } from './lib/node-server.ts';
import type { ProcessGroup } from './lib/processes.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import { measureRequestBytesCost } from './lib/request-bytes-cost.ts';
import type { BenchSettings } from './lib/settings.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import { median, spread } from './lib/stats.ts';
import type { StartedTarget, Target, TargetContext } from './lib/target.ts';
import type { TelemetryMix } from './lib/target-meshgate-telemetry.ts';
import { createTelemetryTarget } from './lib/target-meshgate-telemetry.ts';
import { measureCallCost } from './lib/telemetry-call-cost.ts';
import { groupCpuMs, machineSample } from './lib/tls-cpu.ts';

/*
 * npm run bench:telemetry: what tracing, access logging and metrics cost.
 * One sidecar, outbound -> inbound -> upstream (so each request makes a
 * client span and a server span, two access log lines and two metric
 * updates), with telemetry all off, each kind alone, and all on, in one run
 * with one load generator and the same settings (BENCH_* as for npm run
 * bench). Every row's sidecar runs for the whole bench and the rows take
 * turns, run after run, so a neighbour's burst of CPU (this machine is
 * shared) lands on every row alike; next to req/s and latency each row
 * reports the sidecar's CPU time per request, which does not depend on who
 * else wanted the CPU. Then the cost of counting request body bytes, in process.
 * Writes bench/results/telemetry-latest.json.
 */

const RESULTS_FILE = fileURLToPath(new URL('results/telemetry-latest.json', import.meta.url));

let sinkUrl = '';
const MIXES: ReadonlyArray<{ id: string; label: string; mix: TelemetryMix }> = [
  { id: 'off', label: 'telemetry off', mix: { metrics: false, accessLog: false, tracing: undefined } },
  { id: 'metrics', label: 'metrics only', mix: { metrics: true, accessLog: false, tracing: undefined } },
  { id: 'access-log', label: 'access log only', mix: { metrics: false, accessLog: true, tracing: undefined } },
  { id: 'tracing', label: 'tracing only (every call sampled)', mix: { metrics: false, accessLog: false, tracing: 1 } },
  { id: 'tracing-1pct', label: 'tracing only, 1% sampled', mix: { metrics: false, accessLog: false, tracing: 0.01 } },
  { id: 'all', label: 'all on (every call traced and logged)', mix: { metrics: true, accessLog: true, tracing: 1 } },
  { id: 'all-sampled', label: 'all on, 1% of traces and of access lines', mix: { metrics: true, accessLog: true, tracing: 0.01, logSampling: 0.01 } },
];
const ROWS: readonly Target[] = MIXES.map(({ id, label, mix }) => createTelemetryTarget(id, label, mix, () => sinkUrl));

interface Row {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  readonly reason?: string;
  readonly rps?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  /** Sidecar CPU (user + system) per request, microseconds; median over runs. */
  readonly cpuUsPerRequest?: number;
  readonly runs: readonly LoadResult[];
  /** CPU share the rest of the machine used during each run. */
  readonly othersBusy?: readonly number[];
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

interface Live {
  readonly target: Target;
  readonly started: StartedTarget;
  readonly runs: LoadResult[];
  readonly cpuUs: number[];
  readonly othersBusy: number[];
}

/** Starts every row's sidecar and checks it answers like the upstream; a row that cannot start is reported, not run. */
async function startRows(targets: readonly Target[], context: TargetContext): Promise<{ live: Live[]; dead: Row[] }> {
  const live: Live[] = [];
  const dead: Row[] = [];
  for (const target of targets) {
    const start = await target.start(context);
    if (!start.ok) {
      log(`${target.id}: skipped (${start.reason})`);
      dead.push({ id: target.id, label: target.label, status: 'skipped', reason: start.reason, runs: [] });
      continue;
    }
    const res = await probe(start.started.url, start.started.headers, 3000).catch((err: Error) => ({ status: 0, body: err.message }));
    if (res.status !== 200 || res.body !== ECHO_BODY) {
      await start.started.stop();
      dead.push({ id: target.id, label: target.label, status: 'failed', reason: `pre-flight got HTTP ${res.status}`, runs: [] });
      continue;
    }
    live.push({ target, started: start.started, runs: [], cpuUs: [], othersBusy: [] });
  }
  return { live, dead };
}

async function runOnce(row: Live, loadgen: LoadGenerator, settings: BenchSettings, durationS: number, record: boolean): Promise<void> {
  const { url, headers, pgid } = row.started;
  const cpuBefore = groupCpuMs(pgid);
  const machineBefore = machineSample();
  const result = await loadgen.run({ url, headers, connections: settings.connections, durationS });
  const cpuAfter = groupCpuMs(pgid);
  const machineAfter = machineSample();
  if (!record) return;
  row.runs.push(result);
  const sidecarMs = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined;
  if (sidecarMs !== undefined && result.requests > 0) row.cpuUs.push((sidecarMs * 1000) / result.requests);
  const total = machineAfter.totalMs - machineBefore.totalMs;
  // What the rest of the machine used: all busy time minus the sidecar's (wrk and the upstream count as "others" too).
  if (total > 0 && sidecarMs !== undefined) row.othersBusy.push(Math.max(0, (machineAfter.busyMs - machineBefore.busyMs - sidecarMs) / total));
  log(
    `${row.target.id}: ${Math.round(result.rps)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms` +
      (row.cpuUs.length > 0 ? `, ${row.cpuUs.at(-1)!.toFixed(0)} µs CPU/request` : ''),
  );
}

function summarize(row: Live): Row {
  const base = { id: row.target.id, label: row.target.label, runs: row.runs, othersBusy: row.othersBusy };
  if (row.runs.length === 0) return { ...base, status: 'failed', reason: 'no run finished' };
  return {
    ...base,
    status: 'ok',
    rps: median(row.runs.map((r) => r.rps)),
    p50Ms: median(row.runs.map((r) => r.p50Ms)),
    p99Ms: median(row.runs.map((r) => r.p99Ms)),
    ...(row.cpuUs.length > 0 ? { cpuUsPerRequest: median(row.cpuUs) } : {}),
  };
}

function table(rows: readonly Row[]): string {
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const header = ['telemetry', 'req/s', 'vs off', 'p50 ms', 'p99 ms', 'CPU µs/req', 'CPU vs off', 'notes'];
  const pct = (value: number, ref: number) => `${value >= ref ? '+' : ''}${(((value - ref) / ref) * 100).toFixed(1)}%`;
  const body = rows.map((r) => {
    if (r.status !== 'ok') return [r.label, '-', '-', '-', '-', '-', '-', `${r.status}: ${r.reason ?? ''}`];
    const failed = r.runs.reduce((n, x) => n + x.errors + x.non2xx, 0);
    const notes = [
      r.runs.length > 1 ? `req/s spread ${(spread(r.runs.map((x) => x.rps)) * 100).toFixed(0)}%` : '',
      r.othersBusy && r.othersBusy.length > 0 ? `others used ${(median([...r.othersBusy]) * 100).toFixed(0)}% CPU` : '',
      failed > 0 ? `${failed} failed responses` : '',
    ]
      .filter(Boolean)
      .join('; ');
    return [
      r.label,
      Math.round(r.rps!).toLocaleString('en-US'),
      off ? pct(r.rps!, off.rps!) : 'n/a',
      r.p50Ms!.toFixed(2),
      r.p99Ms!.toFixed(2),
      r.cpuUsPerRequest === undefined ? 'n/a' : r.cpuUsPerRequest.toFixed(0),
      off?.cpuUsPerRequest !== undefined && r.cpuUsPerRequest !== undefined ? pct(r.cpuUsPerRequest, off.cpuUsPerRequest) : 'n/a',
      notes,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = (i: number) => i > 0 && i < 7;
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  return [line(header), `| ${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`, ...body.map(line)].join('\n');
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
  setTimeout(
    () => {
      log('watchdog: run overran; stopping');
      group.killAllSync();
      process.exit(1);
    },
    (120 + rowsToRun.length * perRowS) * 1000,
  ).unref();
  try {
    const loadgen = chooseLoadGenerator(group, settings);
    const busy = await busyShare(1000);
    const describe = `${loadgen.name} ${loadgen.version}, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs (median), ${settings.warmupS}s warm-up; node ${process.version}, ${cpus().length} CPUs`;
    log(describe);
    if (busy > 0.1) log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);
    const upstream = await startEchoUpstream(group, settings);
    const sink = await startNodeServer(group, 'otlp-sink', 'otlp-sink.ts', [], 10_000);
    sinkUrl = `http://127.0.0.1:${sink.port}`;
    const context = upstream.context;
    const { live, dead } = await startRows(rowsToRun, context);
    if (settings.warmupS > 0) for (const row of live) await runOnce(row, loadgen, settings, settings.warmupS, false);
    for (let run = 1; run <= settings.runs; run++) {
      log(`round ${run}/${settings.runs}`);
      for (const row of live) await runOnce(row, loadgen, settings, settings.durationS, true);
    }
    for (const row of live) await row.started.stop();
    const byId = new Map([...live.map((row) => [row.target.id, summarize(row)] as const), ...dead.map((row) => [row.id, row] as const)]);
    const rows = rowsToRun.map((t) => byId.get(t.id)!);
    const exported = await probe(`${sinkUrl}/stats`, {}, 2000).then((r) => JSON.parse(r.body) as { requests: number; bytes: number });
    await upstream.stop();

    log('per-request telemetry CPU, in process (outbound + inbound call of one request)');
    const callCost = await measureCallCost(MIXES, sinkUrl);
    await sink.child.stop();
    const offNs = callCost.find((c) => c.id === 'off')?.ns ?? 0;
    const costTable = [
      '| telemetry | CPU ns per request (2 calls) | added by telemetry |',
      '| --- | ---: | ---: |',
      ...callCost.map((c) => `| ${c.label} | ${c.ns.toFixed(0)} | ${c.id === 'off' ? '-' : `${((c.ns - offNs) / 1000).toFixed(1)} µs`} |`),
    ].join('\n');

    log('request body byte counting, in process (16 KiB chunks)');
    const bytesCost = await measureRequestBytesCost();
    const bytesTable = [
      '| counting request bytes | ns per 16 KiB chunk | added |',
      '| --- | ---: | ---: |',
      `| none (baseline) | ${bytesCost.plainNs.toFixed(0)} | - |`,
      `| the request's own push, wrapped (what the sidecar does) | ${bytesCost.wrappedPushNs.toFixed(0)} | ${(bytesCost.wrappedPushNs - bytesCost.plainNs).toFixed(0)} ns |`,
      `| a counting PassThrough piped in between (avoided) | ${bytesCost.passThroughNs.toFixed(0)} | ${(bytesCost.passThroughNs - bytesCost.plainNs).toFixed(0)} ns |`,
    ].join('\n');

    process.stdout.write(`\n${describe}\n${busy > 0.1 ? `warning: the machine was ${(busy * 100).toFixed(0)}% busy before the run\n` : ''}\n${table(rows)}\n\n${costTable}\n\n${bytesTable}\n\n`);
    process.stdout.write(`The OTLP sink received ${exported.requests} export requests (${(exported.bytes / 1024 / 1024).toFixed(1)} MiB).\n`);
    mkdirSync(fileURLToPath(new URL('results/', import.meta.url)), { recursive: true });
    writeFileSync(
      RESULTS_FILE,
      `${JSON.stringify({ generatedAt: new Date().toISOString(), settings, environment: { node: process.version, cpus: cpus().length, loadGenerator: `${loadgen.name} ${loadgen.version}`, busyCpuBeforeRun: busy }, rows, callCost, requestBytesCounting: bytesCost, otlpSink: exported }, null, 2)}\n`,
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
