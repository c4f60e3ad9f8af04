import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, platform, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import { busyShare } from './lib/machine-load.ts';
import { startNodeServer } from './lib/node-server.ts';
import type { ProcessGroup } from './lib/processes.ts';
import { createProcessGroup, findExecutable, settlesWithin } from './lib/processes.ts';
import { median } from './lib/stats.ts';
import type { TlsClientJob } from './lib/tls-client.ts';
import type { NegotiatedTls } from './lib/tls-connection.ts';
import { connectOnce, createClientContext, negotiatedOf } from './lib/tls-connection.ts';
import { groupCpuMs, groupPids, machineSample } from './lib/tls-cpu.ts';
import { runTlsClient } from './lib/tls-load.ts';
import type { PerfColumn } from './lib/tls-perf.ts';
import { perfBreakdown, perfRecordArgs, renderPerf } from './lib/tls-perf.ts';
import type { BenchPki } from './lib/tls-pki.ts';
import { startBenchPki } from './lib/tls-pki.ts';
import type { ProfileSummary, ProfileWindow } from './lib/tls-profile.ts';
import { renderProfile, summariseProfile } from './lib/tls-profile.ts';
import type { TlsRowResult, TlsRunResult } from './lib/tls-report.ts';
import { renderTlsTable } from './lib/tls-report.ts';
import type { TlsBenchSettings } from './lib/tls-settings.ts';
import { readTlsSettings, TLS_SETTINGS_HELP } from './lib/tls-settings.ts';
import type { StartedTlsTarget, TlsTarget, TlsTargetContext } from './lib/tls-targets.ts';
import { createMeshgateTlsTarget, createNginxTlsTarget } from './lib/tls-targets.ts';

/*
 * npm run bench:tls — new mutual-TLS connections per second through a meshgate
 * sidecar's inbound listener, next to nginx doing the same, in one run.
 *
 * Every connection: TCP connect, full handshake with a client certificate (no
 * session resumption on either side), one small HTTP/1.1 request proxied to
 * the echo upstream, close. Both servers hold a certificate from the same
 * meshgate CA (key type BENCH_KEY_TYPE) and require the client's. Both stay up
 * for the whole run and their measured runs alternate (A B, B A, ...), so a
 * change in background load hits both. See bench/README.md.
 *
 * Progress goes to stderr; the table (stdout) and bench/results/tls-latest.json
 * are the output.
 */

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('results/', import.meta.url));
const RESULTS_FILE = join(RESULTS_DIR, 'tls-latest.json');
const CLIENT_SA = 'client';
/** Share of all CPUs other processes may use during a run before it is discarded (and the warning threshold). */
const BUSY_LIMIT = 0.1;

const ALL_TARGETS: readonly TlsTarget[] = [createNginxTlsTarget(), createMeshgateTlsTarget()];

function log(message: string): void {
  process.stderr.write(`[bench:tls] ${message}\n`);
}

function installExitHooks(group: ProcessGroup, interrupt: AbortController): void {
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    if (interrupt.signal.aborted) {
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
  process.on('exit', () => group.killAllSync());
}

function startWatchdog(group: ProcessGroup, settings: TlsBenchSettings, targetCount: number): void {
  const limitS = Math.ceil(
    60 + targetCount * (settings.startTimeoutMs / 1000 + settings.warmupS + 30 + (settings.runs * (1 + settings.busyRetries) + (settings.perf ? 1 : 0)) * (settings.durationS + 25)),
  );
  setTimeout(() => {
    log(`watchdog: run exceeded ${limitS}s, killing children`);
    group.killAllSync();
    process.exit(1);
  }, limitS * 1000).unref();
}

function nginxVersion(): { nginx: string; nginxOpenssl: string } {
  const binary = findExecutable('nginx', process.env['PATH']);
  if (binary === undefined) return { nginx: 'not installed', nginxOpenssl: 'n/a' };
  const out = spawnSync(binary, ['-V'], { encoding: 'utf8', timeout: 5000 });
  const text = `${out.stdout ?? ''}${out.stderr ?? ''}`;
  const running = /running with OpenSSL (\S+)/.exec(text) ?? /built with OpenSSL (\S+)/.exec(text);
  return { nginx: /nginx\/(\S+)/.exec(text)?.[1] ?? 'unknown', nginxOpenssl: running?.[1] ?? 'unknown' };
}

interface Active {
  readonly target: TlsTarget;
  readonly started: StartedTlsTarget;
  readonly negotiated: NegotiatedTls;
  readonly runs: TlsRunResult[];
  /** When each measured run ran, on the monotonic clock (µs), to cut the CPU profile to them. */
  readonly windows: ProfileWindow[];
  /** Runs thrown away because other processes took too much CPU meanwhile. */
  readonly discarded: TlsRunResult[];
  failure?: string;
}

/** One GET over a fresh mutual-TLS connection that must return 200 with exactly the upstream's body, not resumed. */
async function preflight(port: number, context: TlsTargetContext): Promise<{ ok: true; negotiated: NegotiatedTls } | { ok: false; reason: string }> {
  let negotiated: NegotiatedTls | undefined;
  const outcome = await connectOnce({ host: '127.0.0.1', port, timeoutMs: 3000 }, context.clientContext, (s) => {
    negotiated = negotiatedOf(s);
  });
  if (!outcome.ok) return { ok: false, reason: `pre-flight: ${outcome.error}` };
  if (outcome.status !== 200 || outcome.body !== ECHO_BODY) return { ok: false, reason: `pre-flight got HTTP ${outcome.status}, body ${JSON.stringify(outcome.body.slice(0, 120))}` };
  if (outcome.reused) return { ok: false, reason: 'pre-flight: the session was resumed' };
  return { ok: true, negotiated: negotiated! };
}

async function measureRun(group: ProcessGroup, active: Active, job: TlsClientJob, upstreamPgid: number | undefined, counted = true): Promise<TlsRunResult> {
  const serverBefore = groupCpuMs(active.started.pgid);
  const upstreamBefore = groupCpuMs(upstreamPgid);
  const harnessBefore = process.cpuUsage();
  const machineBefore = machineSample();
  const startUs = Number(process.hrtime.bigint() / 1000n);
  const report = await runTlsClient(group, job);
  if (counted) active.windows.push({ startUs, endUs: Number(process.hrtime.bigint() / 1000n) });
  const machineAfter = machineSample();
  const harness = process.cpuUsage(harnessBefore);
  const serverAfter = groupCpuMs(active.started.pgid);
  const upstreamAfter = groupCpuMs(upstreamPgid);
  const serverCpuMs = serverBefore !== undefined && serverAfter !== undefined ? serverAfter - serverBefore : undefined;
  const upstreamCpuMs = upstreamBefore !== undefined && upstreamAfter !== undefined ? upstreamAfter - upstreamBefore : undefined;
  let othersBusyShare: number | undefined;
  if (serverCpuMs !== undefined && upstreamCpuMs !== undefined) {
    const ours = serverCpuMs + upstreamCpuMs + report.clientCpuMs + (harness.user + harness.system) / 1000;
    const total = machineAfter.totalMs - machineBefore.totalMs;
    othersBusyShare = total > 0 ? Math.max(0, (machineAfter.busyMs - machineBefore.busyMs - ours) / total) : undefined;
  }
  return {
    ...report,
    serverCpuMs,
    serverCpuUsPerConn: serverCpuMs !== undefined && report.completed > 0 ? (serverCpuMs * 1000) / report.completed : undefined,
    serverCpuShare: serverCpuMs !== undefined && report.elapsedS > 0 ? serverCpuMs / (report.elapsedS * 1000) : undefined,
    upstreamCpuMs,
    othersBusyShare,
  };
}

function medianOf(runs: readonly TlsRunResult[], pick: (r: TlsRunResult) => number | undefined): number | undefined {
  const values = runs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
  return values.length === runs.length && values.length > 0 ? median(values) : undefined;
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`usage: npm run bench:tls\n\n${TLS_SETTINGS_HELP}\n`);
    return 0;
  }
  let settings: TlsBenchSettings;
  try {
    settings = readTlsSettings(process.env);
  } catch (err) {
    process.stderr.write(`bench:tls: ${(err as Error).message}\n\n${TLS_SETTINGS_HELP}\n`);
    return 2;
  }
  const targets = settings.targets === undefined ? ALL_TARGETS : ALL_TARGETS.filter((t) => settings.targets!.includes(t.id));

  const group = createProcessGroup();
  const interrupt = new AbortController();
  installExitHooks(group, interrupt);
  startWatchdog(group, settings, targets.length);
  let pki: BenchPki | undefined;
  const actives: Active[] = [];
  try {
    const busy = await busyShare(1000);
    const environment = {
      busyCpuBeforeRun: Math.round(busy * 1000) / 1000,
      node: process.version,
      nodeOpenssl: process.versions.openssl,
      ...nginxVersion(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      os: `${platform()} ${release()}`,
    };
    const describe =
      `${settings.keyType}, client groups ${settings.groups ?? 'node default'}; node tls client, ${settings.connections} connections, ` +
      `${settings.durationS}s x ${settings.runs} runs (median, alternating), ${settings.warmupS}s warm-up; ` +
      `node ${environment.node} (OpenSSL ${environment.nodeOpenssl}), nginx ${environment.nginx} (OpenSSL ${environment.nginxOpenssl}), ${environment.cpus} CPUs`;
    log(describe);
    if (busy > 0.1) log(`warning: other processes used ${(busy * 100).toFixed(0)}% of the CPUs before the run; expect noisy figures`);

    const pkiDir = group.tempDir('meshgate-bench-tls-');
    pki = await startBenchPki(pkiDir, settings.keyType);
    const client = await pki.issue(CLIENT_SA);
    log(`CA on ${pki.caAddress}; client certificate ${client.spiffeId}`);
    const clientFiles = { keyFile: client.keyFile, certFile: client.chainFile, caFile: pki.trustBundleFile };
    const clientContext = createClientContext(
      { keyPem: readFileSync(clientFiles.keyFile, 'utf8'), certPem: readFileSync(clientFiles.certFile, 'utf8'), caPem: readFileSync(clientFiles.caFile, 'utf8') },
      settings.groups,
    );
    const upstream = await startNodeServer(group, 'upstream', 'echo.ts', [], 10_000);
    const profileDir = settings.profile ? group.tempDir('meshgate-bench-tls-prof-') : undefined;
    const perfBinary = settings.perf ? findExecutable('perf', process.env['PATH']) : undefined;
    if (settings.perf && perfBinary === undefined) log('BENCH_TLS_PERF: perf not found (apt-get install -y linux-perf); no breakdown');
    const context: TlsTargetContext = {
      group,
      pki,
      keyType: settings.keyType,
      upstreamPort: upstream.port,
      startTimeoutMs: settings.startTimeoutMs,
      repoRoot: REPO_ROOT,
      pathEnv: process.env['PATH'],
      clientContext,
      profileDir,
      perfMap: perfBinary !== undefined,
    };

    const rows = new Map<string, TlsRowResult>();
    for (const target of targets) {
      log(`${target.id}: starting`);
      let result;
      try {
        result = await target.start(context);
      } catch (err) {
        result = { ok: false as const, reason: (err as Error).message.split('\n')[0] ?? 'error' };
      }
      if (interrupt.signal.aborted) return 130;
      if (!result.ok) {
        log(`${target.id}: skipped (${result.reason})`);
        rows.set(target.id, { id: target.id, label: target.label, status: 'skipped', reason: result.reason, runs: [] });
        continue;
      }
      const check = await preflight(result.started.port, context);
      if (!check.ok) {
        log(`${target.id}: failed (${check.reason})`);
        rows.set(target.id, { id: target.id, label: target.label, status: 'failed', reason: check.reason, detail: result.started.detail, runs: [] });
        await result.started.stop();
        continue;
      }
      log(`${target.id}: ready on 127.0.0.1:${result.started.port}, ${check.negotiated.protocol} ${check.negotiated.cipher} ${check.negotiated.group} ALPN ${check.negotiated.alpn}`);
      actives.push({ target, started: result.started, negotiated: check.negotiated, runs: [], windows: [], discarded: [] });
    }

    const jobFor = (active: Active, durationS: number): TlsClientJob => ({
      host: '127.0.0.1',
      port: active.started.port,
      connections: settings.connections,
      durationS,
      ...clientFiles,
      groups: settings.groups,
    });
    if (settings.warmupS > 0) {
      for (const active of actives) {
        log(`${active.target.id}: warm-up ${settings.warmupS}s`);
        try {
          await runTlsClient(group, jobFor(active, settings.warmupS));
        } catch (err) {
          active.failure = `warm-up: ${(err as Error).message.split('\n')[0]}`;
        }
        if (interrupt.signal.aborted) return 130;
      }
    }
    for (let i = 1; i <= settings.runs; i++) {
      // A B, then B A: neither target always runs first after a pause, or last.
      const order = i % 2 === 1 ? actives : [...actives].reverse();
      for (const active of order) {
        if (active.failure !== undefined) continue;
        try {
          for (let attempt = 0; ; attempt++) {
            const run = await measureRun(group, active, jobFor(active, settings.durationS), upstream.child.process.pid);
            if (interrupt.signal.aborted) return 130;
            const line =
              `${active.target.id}: run ${i}/${settings.runs}: ${Math.round(run.perSecond)} handshakes/s, p50 ${run.p50Ms.toFixed(2)} ms, p99 ${run.p99Ms.toFixed(2)} ms` +
              (run.serverCpuUsPerConn !== undefined ? `, server ${Math.round(run.serverCpuUsPerConn)} µs CPU/conn (${Math.round(run.serverCpuShare! * 100)}% of a core)` : '') +
              `, client ${Math.round(run.clientCpuMs / run.elapsedS / 10)}% of a core` +
              (run.othersBusyShare !== undefined ? `, others ${Math.round(run.othersBusyShare * 100)}% of the machine` : '') +
              (run.errors + run.non200 + run.reused > 0 ? `, ${run.errors} errors, ${run.non200} non-200, ${run.reused} resumed` : '');
            // Another process took a real share of the CPUs: this run says more about it than about the target.
            if ((run.othersBusyShare ?? 0) > BUSY_LIMIT && attempt < settings.busyRetries) {
              active.discarded.push(run);
              log(`${line} -- discarded (other processes over ${BUSY_LIMIT * 100}%), again`);
              continue;
            }
            active.runs.push(run);
            log(line);
            break;
          }
        } catch (err) {
          if (interrupt.signal.aborted) return 130;
          active.failure = (err as Error).message.split('\n')[0] ?? 'error';
          log(`${active.target.id}: failed (${active.failure})`);
        }
      }
    }

    const perfColumns: PerfColumn[] = [];
    if (perfBinary !== undefined) {
      const perfDir = group.tempDir('meshgate-bench-tls-perf-');
      for (const active of actives) {
        if (active.failure !== undefined || active.started.pgid === undefined) continue;
        const file = join(perfDir, `${active.target.id}.data`);
        log(`${active.target.id}: one more run under perf record (not counted)`);
        const recorder = group.spawn({ name: 'perf', command: perfBinary, args: perfRecordArgs(groupPids(active.started.pgid), settings.durationS, file) });
        try {
          const run = await measureRun(group, active, jobFor(active, settings.durationS), upstream.child.process.pid, false);
          await settlesWithin(recorder.exited, 15_000);
          await recorder.stop(2000);
          perfColumns.push({ label: active.target.id, cpuUsPerConn: run.serverCpuUsPerConn, breakdown: perfBreakdown(perfBinary, file) });
        } catch (err) {
          await recorder.stop(500);
          log(`${active.target.id}: perf run failed (${(err as Error).message.split('\n')[0]})`);
        }
        if (interrupt.signal.aborted) return 130;
      }
    }

    for (const active of actives) await active.started.stop();
    await upstream.child.stop();
    let profile: ProfileSummary | undefined;
    if (profileDir !== undefined) {
      profile = summariseProfile(profileDir, REPO_ROOT, actives.find((a) => a.target.id === 'meshgate-inbound')?.windows ?? []);
      if (profile === undefined) log('no CPU profile was written (did the sidecar exit cleanly?)');
    }

    for (const active of actives) {
      const { target, runs } = active;
      const base = { id: target.id, label: target.label, detail: active.started.detail, negotiated: active.negotiated, runs, discardedRuns: active.discarded };
      if (active.failure !== undefined) {
        rows.set(target.id, { ...base, status: 'failed', reason: active.failure });
        continue;
      }
      rows.set(target.id, {
        ...base,
        status: 'ok',
        handshakesPerSecond: median(runs.map((r) => r.perSecond)),
        p50Ms: median(runs.map((r) => r.p50Ms)),
        p99Ms: median(runs.map((r) => r.p99Ms)),
        handshakeP50Ms: median(runs.map((r) => r.handshakeP50Ms)),
        ...(medianOf(runs, (r) => r.serverCpuUsPerConn) !== undefined ? { serverCpuUsPerConn: medianOf(runs, (r) => r.serverCpuUsPerConn)! } : {}),
        ...(medianOf(runs, (r) => r.serverCpuShare) !== undefined ? { serverCpuShare: medianOf(runs, (r) => r.serverCpuShare)! } : {}),
        ...(settings.profile && target.id === 'meshgate-inbound' ? { profiled: true } : {}),
      });
    }
    const nginxRate = rows.get('nginx')?.handshakesPerSecond;
    const ordered = targets.map((t) => rows.get(t.id)!).map((r) => (r.handshakesPerSecond !== undefined && nginxRate ? { ...r, vsNginx: r.handshakesPerSecond / nginxRate } : r));

    const othersMax = Math.max(0, ...actives.flatMap((a) => a.runs.map((r) => r.othersBusyShare ?? 0)));
    const busyNote =
      (busy > 0.1 ? `\nwarning: the machine was ${(busy * 100).toFixed(0)}% busy before the run; figures are noisy` : '') +
      (othersMax > BUSY_LIMIT ? `\nwarning: other processes used up to ${(othersMax * 100).toFixed(0)}% of the CPUs during a run; figures are noisy` : '');
    process.stdout.write(`\n${describe}\n${busyNote}${busyNote ? '\n' : ''}\n${renderTlsTable(ordered)}\n\n`);
    mkdirSync(RESULTS_DIR, { recursive: true });
    if (perfColumns.length > 0) {
      process.stdout.write(`Server CPU per connection by component (perf record, one extra run per target, ${settings.durationS}s):\n${renderPerf(perfColumns)}\n\n`);
    }
    if (profile) {
      copyFileSync(profile.file, join(RESULTS_DIR, 'tls-sidecar.cpuprofile'));
      process.stdout.write(`${renderProfile(profile)}\n(profile: bench/results/tls-sidecar.cpuprofile)\n\n`);
    }

    const report = {
      generatedAt: new Date().toISOString(),
      settings,
      environment: { ...environment, othersBusyDuringRunsMax: Math.round(othersMax * 1000) / 1000 },
      upstreamBodyBytes: ECHO_BODY.length,
      rows: ordered,
      ...(perfColumns.length > 0 ? { perf: perfColumns } : {}),
      ...(profile ? { sidecarProfile: { ...profile, file: 'bench/results/tls-sidecar.cpuprofile' } } : {}),
    };
    writeFileSync(RESULTS_FILE, `${JSON.stringify(report, null, 2)}\n`);
    log(`wrote ${RESULTS_FILE}`);
    return 0;
  } finally {
    for (const active of actives) await active.started.stop().catch(() => undefined);
    await pki?.close().catch(() => undefined);
    await group.stopAll(2000);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:tls: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
