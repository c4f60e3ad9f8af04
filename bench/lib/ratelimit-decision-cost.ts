import { Redis } from 'ioredis';
import type { CallContext } from '../../src/core/call-context.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { Filter } from '../../src/core/filter.ts';
import type { Verdict } from '../../src/core/verdict.ts';
import { globalBucketKey } from '../../src/filters/ratelimit/bucket-key.ts';
import { bucketShape } from '../../src/filters/ratelimit/gcra.ts';
import { createLocalBuckets } from '../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitFilter } from '../../src/filters/ratelimit/ratelimit-filter.ts';
import type { RateLimitRuntime } from '../../src/filters/ratelimit/ratelimit-runtime.ts';
import { createRateLimitRuntime } from '../../src/filters/ratelimit/ratelimit-runtime.ts';
import type { RateLimitStore } from '../../src/filters/ratelimit/redis-store.ts';
import { createRedisStore } from '../../src/filters/ratelimit/redis-store.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import { createSidecarMetrics } from '../../src/telemetry/metrics.ts';
import type { RateLimitBenchRules } from './ratelimit-policy.ts';
import { rateLimitDocument } from './ratelimit-policy.ts';
import { redisStats, resetRedisStats } from './redis-server.ts';
import { median } from './stats.ts';
import { groupCpuMs } from './tls-cpu.ts';

/*
 * bench:ratelimit, in process: what one rate-limit decision costs, with the
 * sidecar's own filter (createRateLimitFilter), local bucket table, metrics and
 * Redis store (ioredis, auto-pipelining, the Lua script) against a real
 * redis-server on loopback.
 *
 *  - local cases answer synchronously: timed in batches of 64 calls over
 *    samples of >= 2 ms (a clock read per call would cost as much as the
 *    call); the figure is the median sample.
 *  - global cases are awaited with 1, 16 or 64 calls in flight (auto-pipelining
 *    puts the calls of one event-loop turn in one write; a sidecar under wrk's
 *    50 connections sends about 12 per write); every call is timed on its own.
 *    Next to them, in the same run, the store alone (the Lua script, no filter)
 *    and an ioredis PING (the loopback round trip), so the time splits into
 *    filter, script and transport.
 *
 * Calls come from 1024 callers (distinct SPIFFE IDs and API keys), so the
 * buckets are many, as in a mesh, not one hot key.
 */

const CALLERS = 1024;
const SAMPLE_NS = 2_000_000n;
const BATCH = 64;
/** Long enough that localBucketKey hashes it (> 256 characters with the rule prefix). */
const API_KEY_LENGTH = 300;
/** Calls in flight of the global cases. */
const IN_FLIGHT = [1, 16, 64] as const;
/** Cases measured with a redis: the watchdog's budget. */
export const DECISION_CASES = 3 + 3 * IN_FLIGHT.length;
/** Share of calls not admitted above which a row is flagged, as in the HTTP table. */
const FAILED_SHARE_LIMIT = 0.001;

export interface CostSettings {
  /** Measured runs per case; the table shows medians. */
  readonly runs: number;
  /** Seconds per measured run. */
  readonly runS: number;
  /** Unmeasured seconds per case before its first run; 0 = none. */
  readonly warmupS: number;
}

interface CostRun {
  /** CPU time of this process per call (µs). */
  readonly cpuUs: number;
  /** Wall time per call (µs): a call's own latency (global), or the batch average (local). */
  readonly p50Us: number;
  readonly p99Us: number | undefined;
  readonly callsPerS: number;
  /** redis-server CPU per call (µs), Linux only. */
  readonly redisCpuUs: number | undefined;
  /** Calls per read event in Redis: how many calls auto-pipelining put in one write. */
  readonly redisDepth: number | undefined;
  /** Microseconds per script call inside Redis (INFO commandstats). */
  readonly scriptUs: number | undefined;
  /** Calls that did not get `continue` (a refusal or Redis not answering in time). */
  readonly failed: number;
  readonly calls: number;
}

export interface CostRow {
  readonly id: string;
  readonly label: string;
  /** Calls in flight; undefined for synchronous (local) decisions. */
  readonly inFlight: number | undefined;
  readonly status: 'ok' | 'skipped';
  readonly reason?: string;
  readonly cpuUs?: number;
  readonly p50Us?: number;
  readonly p99Us?: number | undefined;
  readonly callsPerS?: number;
  readonly redisCpuUs?: number | undefined;
  readonly redisDepth?: number | undefined;
  readonly scriptUs?: number | undefined;
  readonly runs: readonly CostRun[];
}

interface SyncCase {
  readonly kind: 'sync';
  readonly id: string;
  readonly label: string;
  readonly call: (i: number) => Verdict | Promise<Verdict>;
}

interface AsyncCase {
  readonly kind: 'async';
  readonly id: string;
  readonly label: string;
  readonly inFlight: number;
  /** Resolves true when the call was answered as it should be. */
  readonly call: (i: number) => Promise<boolean>;
}

type Case = SyncCase | AsyncCase;

export interface RedisUnderTest {
  readonly url: string;
  /** Process group of redis-server, for its CPU time. */
  readonly pgid: number | undefined;
}

function callerCalls(): CallContext[] {
  return Array.from({ length: CALLERS }, (_, i) => ({
    id: `c${i}`,
    direction: 'inbound' as const,
    startedAt: 0,
    method: 'GET',
    path: `/api/orders/${i}`,
    query: '',
    authority: 'bench.default:8080',
    headers: { 'x-api-key': `k${i}-`.padEnd(API_KEY_LENGTH, 'x') },
    httpVersion: '1.1' as const,
    isGrpc: false,
    source: { address: `10.0.${i >> 8}.${i & 255}`, port: 40000, principal: `spiffe://cluster.local/ns/ns${i % 50}/sa/caller-${i}` },
    destination: { service: 'bench', namespace: 'default' },
    annotations: { retries: 0 },
  }));
}

function validated(raw: Record<string, unknown>): PolicyDocument {
  const result = createPolicyValidator().validate(raw, { file: 'bench/lib/ratelimit-policy.ts', index: 0 });
  if (!result.ok) throw new Error(`bench RateLimitPolicy rejected by src/policy: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
  return result.document.document;
}

const API_MATCH = { methods: ['GET'], paths: ['/api/*'] } as const;

function filterFor(rules: Omit<RateLimitBenchRules, 'match'>, runtime: RateLimitRuntime): Filter {
  return createRateLimitFilter([validated(rateLimitDocument({ ...rules, match: API_MATCH }))], runtime);
}

function isContinue(verdict: Verdict): boolean {
  return verdict.kind === 'continue';
}

/** Median sample of `c` over `runS`: CPU and wall time per call. */
function runSync(c: SyncCase, runS: number): CostRun {
  let failed = 0;
  let calls = 0;
  const cpu: number[] = [];
  const wall: number[] = [];
  const until = performance.now() + runS * 1000;
  while (performance.now() < until) {
    let n = 0;
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    let elapsed = 0n;
    while (elapsed < SAMPLE_NS) {
      for (let k = 0; k < BATCH; k++) {
        const verdict = c.call(calls + n + k);
        if (verdict instanceof Promise || !isContinue(verdict)) failed++;
      }
      n += BATCH;
      elapsed = process.hrtime.bigint() - start;
    }
    const used = process.cpuUsage(cpuStart);
    cpu.push((used.user + used.system) / n);
    wall.push(Number(elapsed) / 1000 / n);
    calls += n;
  }
  const p50Us = median(wall);
  return { cpuUs: median(cpu), p50Us, p99Us: undefined, callsPerS: 1e6 / p50Us, redisCpuUs: undefined, redisDepth: undefined, scriptUs: undefined, failed, calls };
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** `c.inFlight` loops calling `c.call` back to back for `runS`; each call timed on its own. */
async function runAsync(c: AsyncCase, runS: number, redis: RedisUnderTest): Promise<CostRun> {
  await resetRedisStats(redis.url);
  const latencies: number[] = [];
  let failed = 0;
  let next = 0;
  const cpuStart = process.cpuUsage();
  const redisStart = groupCpuMs(redis.pgid);
  const start = performance.now();
  const deadline = start + runS * 1000;
  const loop = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t = performance.now();
      const ok = await c.call(next++);
      latencies.push(performance.now() - t);
      if (!ok) failed++;
    }
  };
  await Promise.all(Array.from({ length: c.inFlight }, loop));
  const elapsedMs = performance.now() - start;
  const used = process.cpuUsage(cpuStart);
  const redisEnd = groupCpuMs(redis.pgid);
  const stats = await redisStats(redis.url);
  const calls = latencies.length;
  const sorted = Float64Array.from(latencies).sort();
  return {
    cpuUs: (used.user + used.system) / calls,
    p50Us: percentile(sorted, 0.5) * 1000,
    p99Us: percentile(sorted, 0.99) * 1000,
    callsPerS: (calls * 1000) / elapsedMs,
    redisCpuUs: redisStart === undefined || redisEnd === undefined ? undefined : ((redisEnd - redisStart) * 1000) / calls,
    redisDepth: stats.depth,
    scriptUs: stats.scriptUsPerCall,
    failed,
    calls,
  };
}

function localCases(calls: readonly CallContext[]): Case[] {
  const runtime = (): RateLimitRuntime =>
    createRateLimitRuntime({
      local: createLocalBuckets(100_000),
      clock: systemClock,
      random: Math.random,
      metrics: createSidecarMetrics({ defaultMetrics: false }),
    });
  const sync = (id: string, label: string, filter: Filter): SyncCase => ({ kind: 'sync', id, label, call: (i) => filter.onRequest(calls[i % CALLERS]!) });
  return [
    sync('local-1', 'local, 1 rule, key source.principal', filterFor({ name: 'local-1', scope: 'local', rules: 1, key: ['source.principal'] }, runtime())),
    sync('local-10', 'local, 10 rules matching, key source.principal', filterFor({ name: 'local-10', scope: 'local', rules: 10, key: ['source.principal'] }, runtime())),
    sync(
      'local-header',
      `local, 1 rule, key header:x-api-key (${API_KEY_LENGTH} B value: hashed)`,
      filterFor({ name: 'local-header', scope: 'local', rules: 1, key: ['header:x-api-key'] }, runtime()),
    ),
  ];
}

function globalCases(calls: readonly CallContext[], store: RateLimitStore, ping: Redis, inFlight: number): Case[] {
  const filter = filterFor(
    { name: 'global-1', scope: 'global', rules: 1, key: ['source.principal'] },
    createRateLimitRuntime({ local: createLocalBuckets(100_000), store, clock: systemClock, random: Math.random, metrics: createSidecarMetrics({ defaultMetrics: false }) }),
  );
  const shape = bucketShape({ requests: 1_000_000, per: 1000 }, 1_000_000);
  const keys = calls.map((c) => globalBucketKey('default/store-only#r0@1/1000000', c.source.principal!));
  const at = (label: string) => (inFlight === 1 ? `${label}, 1 in flight` : `${label}, ${inFlight} in flight`);
  return [
    {
      kind: 'async',
      id: `global-${inFlight}`,
      label: at('global (Redis), 1 rule, key source.principal'),
      inFlight,
      call: async (i) => isContinue(await filter.onRequest(calls[i % CALLERS]!)),
    },
    {
      kind: 'async',
      id: `store-${inFlight}`,
      label: at('↳ the store alone (Lua script via ioredis, no filter)'),
      inFlight,
      call: async (i) => (await store.take(keys[i % CALLERS]!, shape))?.allowed === true,
    },
    {
      kind: 'async',
      id: `ping-${inFlight}`,
      label: at('↳ ioredis PING (loopback round trip)'),
      inFlight,
      call: async () => (await ping.ping()) === 'PONG',
    },
  ];
}

function summarize(c: Case, runs: readonly CostRun[]): CostRow {
  const defined = (values: readonly (number | undefined)[]) => {
    const present = values.filter((v): v is number => v !== undefined);
    return present.length > 0 ? median(present) : undefined;
  };
  return {
    id: c.id,
    label: c.label,
    inFlight: c.kind === 'async' ? c.inFlight : undefined,
    status: 'ok',
    cpuUs: median(runs.map((r) => r.cpuUs)),
    p50Us: median(runs.map((r) => r.p50Us)),
    p99Us: defined(runs.map((r) => r.p99Us)),
    callsPerS: median(runs.map((r) => r.callsPerS)),
    redisCpuUs: defined(runs.map((r) => r.redisCpuUs)),
    redisDepth: defined(runs.map((r) => r.redisDepth)),
    scriptUs: defined(runs.map((r) => r.scriptUs)),
    runs,
  };
}

/**
 * Every case: warm-up, then `runs` rounds in which each case runs once (rounds
 * interleave the cases, so a neighbour's burst of CPU lands on all of them).
 * `redis` undefined: the global cases are skipped rows saying `redisMissing`.
 */
export async function measureDecisionCost(settings: CostSettings, redis: RedisUnderTest | undefined, redisMissing: string, log: (message: string) => void): Promise<CostRow[]> {
  const calls = callerCalls();
  const cases: Case[] = localCases(calls);
  let store: RateLimitStore | undefined;
  let ping: Redis | undefined;
  if (redis) {
    // The sidecar's defaults (rateLimit.redis: timeout 50ms, keyPrefix meshgate:rl:).
    store = createRedisStore({ url: redis.url, timeout: 50, keyPrefix: 'meshgate:rl:' });
    if (!(await store.whenReady(5000))) throw new Error(`redis at ${redis.url} not ready after 5s`);
    ping = new Redis(redis.url, { enableAutoPipelining: true, maxRetriesPerRequest: 0 });
    for (const inFlight of IN_FLIGHT) cases.push(...globalCases(calls, store, ping, inFlight));
  }
  try {
    // Async (global) cases exist only with a redis.
    const runOnce = async (c: Case, runS: number): Promise<CostRun> => (c.kind === 'sync' ? runSync(c, runS) : runAsync(c, runS, redis!));
    if (settings.warmupS > 0) {
      log(`decision cost: warm-up ${settings.warmupS}s per case`);
      for (const c of cases) await runOnce(c, settings.warmupS);
    }
    const runs = new Map<string, CostRun[]>(cases.map((c) => [c.id, []]));
    for (let round = 1; round <= settings.runs; round++) {
      for (const c of cases) {
        const run = await runOnce(c, settings.runS);
        runs.get(c.id)!.push(run);
        log(
          `decision cost: ${c.id} run ${round}/${settings.runs}: ${run.cpuUs.toFixed(2)} µs CPU/call, p50 ${run.p50Us.toFixed(1)} µs, ` +
            `${Math.round(run.callsPerS)} calls/s${run.failed > 0 ? `, ${run.failed} not continue` : ''}`,
        );
      }
    }
    const rows = cases.map((c) => summarize(c, runs.get(c.id)!));
    if (!redis) {
      for (const inFlight of IN_FLIGHT) {
        rows.push({ id: `global-${inFlight}`, label: `global (Redis), ${inFlight} in flight`, inFlight, status: 'skipped', reason: redisMissing, runs: [] });
      }
    }
    return rows;
  } finally {
    await store?.close();
    ping?.disconnect();
  }
}

const us = (v: number | undefined): string => (v === undefined ? '-' : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v).toLocaleString('en-US'));

export function renderCostTable(rows: readonly CostRow[]): string {
  const header = [
    'decision (in process)',
    'in flight',
    'CPU µs/call',
    'latency p50 µs',
    'latency p99 µs',
    'calls/s',
    'redis-server CPU µs/call',
    'calls per Redis read',
    'script µs in Redis',
    'notes',
  ];
  const body = rows.map((r) => {
    if (r.status !== 'ok') return [r.label, String(r.inFlight ?? '-'), '-', '-', '-', '-', '-', '-', '-', `skipped: ${r.reason ?? ''}`];
    const failed = r.runs.reduce((sum, run) => sum + run.failed, 0);
    const calls = r.runs.reduce((sum, run) => sum + run.calls, 0);
    const notes = [
      r.inFlight === undefined ? 'synchronous: latency = wall time per call' : '',
      failed > 0 ? `${failed} of ${calls} calls not admitted${r.inFlight === undefined ? '' : ' (Redis slower than the 50 ms timeout)'}` : '',
      calls > 0 && failed / calls > FAILED_SHARE_LIMIT ? 'NOT COMPARABLE' : '',
    ].filter((n) => n !== '');
    return [
      r.label,
      r.inFlight === undefined ? 'sync' : String(r.inFlight),
      us(r.cpuUs),
      us(r.p50Us),
      us(r.p99Us),
      Math.round(r.callsPerS!).toLocaleString('en-US'),
      us(r.redisCpuUs),
      r.redisDepth === undefined ? '-' : r.redisDepth.toFixed(1),
      us(r.scriptUs),
      notes.join('; '),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = (i: number) => i > 0 && i < header.length - 1;
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(header), rule, ...body.map(line)].join('\n');
}
