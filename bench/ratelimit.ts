import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ECHO_BODY } from './lib/echo-body.ts';
import type { MeasuredRow } from './lib/harness.ts';
import { chooseLoadGenerator, installExitHooks, measureTarget, runBench, selectTargets, startEchoUpstream, startWatchdog, versionOf, writeReport } from './lib/harness.ts';
import { busyShare } from './lib/machine-load.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import type { CostRow } from './lib/ratelimit-decision-cost.ts';
import { DECISION_CASES, measureDecisionCost, renderCostTable } from './lib/ratelimit-decision-cost.ts';
import { createNginxLimitReqTarget, createRateLimitSidecarTarget, decisionNotes } from './lib/ratelimit-targets.ts';
import { renderRatioTable } from './lib/ratio-report.ts';
import type { BenchRedis } from './lib/redis-server.ts';
import { describeRedisStats, redisStats, resetRedisStats, startRedisServer } from './lib/redis-server.ts';
import type { BenchSettings } from './lib/settings.ts';
import { readSettings, SETTINGS_HELP } from './lib/settings.ts';
import type { Target } from './lib/target.ts';
import { createDirectTarget } from './lib/target-direct.ts';
import { createNginxTarget } from './lib/target-nginx.ts';

/*
 * npm run bench:ratelimit: what rate limiting costs, in one run.
 *
 *  1. In process: the sidecar's rate-limit filter deciding calls (local rules,
 *     1 and 10 matching, a principal key and a long hashed header key; a
 *     global rule against a real redis-server with 1, 16 and 64 calls in flight,
 *     next to the store alone and a PING). lib/ratelimit-decision-cost.ts.
 *  2. Over HTTP (wrk, BENCH_* as for npm run bench): req/s, p50, p99 direct,
 *     through nginx without and with limit_req, and through one sidecar
 *     inbound hop with no RateLimitPolicy, a local one and a global one (limits
 *     never reached) and the global one without Redis (the async path with no
 *     I/O), with each proxy's CPU per request.
 *
 * redis-server (loopback, no persistence) is started here and stopped at the
 * end. Writes bench/results/ratelimit-latest.json.
 */

const RESULTS_FILE = fileURLToPath(new URL('results/ratelimit-latest.json', import.meta.url));
/** BENCH_TARGETS id of the in-process part. */
const DECISIONS = 'decisions';
/** Seconds per in-process run; warm-up is BENCH_WARMUP capped at this. */
const DECISION_RUN_S = 1;

function log(message: string): void {
  process.stderr.write(`[bench:ratelimit] ${message}\n`);
}

function httpRows(redis: BenchRedis | undefined, redisMissing: string): Target[] {
  return [
    createDirectTarget(),
    createNginxTarget(),
    createNginxLimitReqTarget(),
    createRateLimitSidecarTarget({ id: 'sidecar', label: 'meshgate inbound, no RateLimitPolicy' }),
    createRateLimitSidecarTarget({ id: 'local', label: 'meshgate inbound, local rule (never reached)' }),
    createRateLimitSidecarTarget({ id: 'global', label: 'meshgate inbound, global rule in Redis (never reached)', redisUrl: redis?.url, redisMissing }),
    createRateLimitSidecarTarget({ id: 'global-no-redis', label: 'meshgate inbound, global rule, no Redis (failureMode allow)' }),
  ];
}

const ROW_IDS = ['direct', 'nginx', 'nginx-limit-req', 'sidecar', 'local', 'global', 'global-no-redis'];

/** One line per rate-limited row: its extra sidecar CPU per request over the no-policy sidecar. */
function summary(rows: readonly MeasuredRow[]): string {
  const base = rows.find((r) => r.id === 'sidecar' && r.status === 'ok');
  const lines: string[] = [];
  for (const id of ['local', 'global', 'global-no-redis', 'nginx-limit-req']) {
    const row = rows.find((r) => r.id === id && r.status === 'ok');
    const versus = id === 'nginx-limit-req' ? rows.find((r) => r.id === 'nginx' && r.status === 'ok') : base;
    if (!row || !versus) continue;
    const cpu = (r: MeasuredRow) => r.cpuUsPerRequest?.['proxy'];
    const delta = cpu(row) !== undefined && cpu(versus) !== undefined ? cpu(row)! - cpu(versus)! : undefined;
    const extraCpu = delta === undefined ? 'proxy CPU n/a' : `proxy CPU per request ${delta >= 0 ? '+' : '−'}${Math.abs(delta).toFixed(1)} µs`;
    const redis = row.cpuUsPerRequest?.['redis'];
    lines.push(
      `${row.label} vs ${versus.label}: req/s ${(row.rps! / versus.rps!).toFixed(2)}x, ${extraCpu}` + (redis !== undefined ? `, plus redis-server CPU ${redis.toFixed(1)} µs per request` : ''),
    );
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`usage: npm run bench:ratelimit\n\n${SETTINGS_HELP}\n  (BENCH_TARGETS ids: ${DECISIONS} (the in-process part), ${ROW_IDS.join(', ')})\n`);
    return 0;
  }
  let settings: BenchSettings;
  let runDecisions: boolean;
  try {
    settings = readSettings(process.env);
    runDecisions = settings.targets === undefined || settings.targets.includes(DECISIONS);
    const httpTargets = settings.targets?.filter((t) => t !== DECISIONS);
    // Ids checked against the rows now, before anything starts.
    selectTargets(httpRows(undefined, ''), { ...settings, targets: httpTargets });
    settings = { ...settings, targets: httpTargets };
  } catch (err) {
    process.stderr.write(`bench:ratelimit: ${(err as Error).message}\n\n${SETTINGS_HELP}\n`);
    return 2;
  }
  const group = createProcessGroup();
  const interrupt = new AbortController();
  installExitHooks(group, interrupt, log);
  const decisionS = runDecisions ? DECISION_CASES * (Math.min(settings.warmupS, DECISION_RUN_S) + settings.runs * DECISION_RUN_S) + 30 : 0;
  startWatchdog(group, settings, ROW_IDS.length, log, decisionS);
  try {
    const loadgen = chooseLoadGenerator(group, settings, log);
    const nginx = findExecutable('nginx', process.env['PATH']);
    const busy = await busyShare(1000);
    const load = loadavg();
    const environment = {
      busyCpuBeforeRun: Math.round(busy * 1000) / 1000,
      loadAverageBeforeRun: load.map((l) => Math.round(l * 100) / 100),
      node: process.version,
      nginx: nginx === undefined ? 'not installed' : versionOf(nginx, ['-v'], /nginx\/(\S+)/),
      redis: 'not started',
      loadGenerator: `${loadgen.name} ${loadgen.version}`,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
    };

    const needsRedis = runDecisions || settings.targets === undefined || settings.targets.includes('global');
    let redis: BenchRedis | undefined;
    let redisMissing = 'not needed';
    if (needsRedis) {
      const started = await startRedisServer(group, process.env['PATH'], settings.startTimeoutMs);
      if (started.ok) {
        redis = started.redis;
        environment.redis = redis.version;
        log(`redis-server ${redis.version} at ${redis.url}`);
      } else {
        redisMissing = started.reason;
        log(`global rows skipped: ${redisMissing}`);
      }
    }
    const describe =
      `${loadgen.name} ${loadgen.version}, 1 thread, ${settings.connections} connections, ${settings.durationS}s x ${settings.runs} runs (median), ` +
      `${settings.warmupS}s warm-up; in process ${settings.runs} x ${DECISION_RUN_S}s per case; node ${environment.node}, nginx ${environment.nginx}, ` +
      `redis ${environment.redis}, ${environment.cpus} CPUs`;
    const loadLine = `load average before the run: ${load.map((l) => l.toFixed(2)).join(', ')}; other processes used ${(busy * 100).toFixed(0)}% of the CPUs`;
    log(describe);
    log(loadLine);

    let decisions: CostRow[] = [];
    if (runDecisions) {
      decisions = await measureDecisionCost(
        { runs: settings.runs, runS: DECISION_RUN_S, warmupS: Math.min(settings.warmupS, DECISION_RUN_S) },
        redis ? { url: redis.url, pgid: redis.child.process.pid } : undefined,
        redisMissing,
        log,
      );
      if (interrupt.signal.aborted) return 130;
    }

    const targets = selectTargets(httpRows(redis, redisMissing), settings);
    const rows: MeasuredRow[] = [];
    if (targets.length > 0) {
      const upstream = await startEchoUpstream(group, settings);
      const context = upstream.context;
      const redisPgid = redis?.child.process.pid;
      for (const target of targets) {
        const row = await measureTarget(target, context, loadgen, settings, log, {
          cpuGroups: (started) => (target.id === 'direct' ? {} : { proxy: started.pgid, ...(target.id === 'global' ? { redis: redisPgid } : {}) }),
          ...(target.id === 'global' && redis ? { beforeRuns: () => resetRedisStats(redis.url) } : {}),
          inspect: async (started) => [
            ...(started.adminUrl !== undefined && target.id !== 'sidecar' ? await decisionNotes(started) : []),
            ...(target.id === 'global' && redis ? [describeRedisStats(await redisStats(redis.url))] : []),
          ],
        });
        // Killed children make failed rows; an interrupted run must not pass them off as results.
        if (interrupt.signal.aborted) return 130;
        rows.push(row);
      }
      await upstream.stop();
    }

    const cpuColumn = (name: string, header: string) => ({
      header,
      cell: (row: MeasuredRow) => {
        const v = row.cpuUsPerRequest?.[name];
        return v === undefined ? '-' : v.toFixed(1);
      },
    });
    const loadAfter = loadavg();
    const out = [
      '',
      describe,
      `${loadLine}; after: ${loadAfter.map((l) => l.toFixed(2)).join(', ')}`,
      '',
      ...(decisions.length > 0 ? [renderCostTable(decisions), ''] : []),
      ...(rows.length > 0
        ? [renderRatioTable(rows, 'sidecar', [cpuColumn('proxy', 'proxy CPU µs/req'), cpuColumn('redis', 'redis CPU µs/req')]), '', ...(summary(rows) ? [summary(rows), ''] : [])]
        : []),
      '',
    ];
    process.stdout.write(out.join('\n'));
    const report = {
      generatedAt: new Date().toISOString(),
      settings,
      environment: { ...environment, loadAverageAfterRun: loadAfter.map((l) => Math.round(l * 100) / 100) },
      upstreamBodyBytes: ECHO_BODY.length,
      decisions,
      rows,
    };
    writeReport(RESULTS_FILE, report, log);
    return 0;
  } finally {
    await group.stopAll(2000);
  }
}

runBench('bench:ratelimit', main);
