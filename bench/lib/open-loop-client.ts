import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

/*
 * The fixed-rate (open-loop) load generator of `npm run bench:mesh`, in its
 * own process so it never shares an event loop with a target:
 *
 *   node bench/lib/open-loop-client.ts '<json OpenLoopJob>'
 *
 * wrk keeps N requests in flight (closed loop): when the target stalls, wrk
 * stops sending and the stall shows up as one slow request, not as the many
 * that would have queued behind it (coordinated omission). wrk2 fixes that
 * but is not packaged. This client sends request i at t0 + i / rate whatever
 * happened before, and measures each latency from that scheduled time, so a
 * stall (of the target, or of this process) counts for every request it
 * delayed. Requests over `connections` keep-alive connections (undici Pool,
 * no pipelining) queue in the pool and that wait counts too.
 *
 * Bounded: exactly rate * (warmupS + durationS) requests are scheduled; one
 * due while `maxInFlight` are outstanding is not sent and counted in
 * `notSent`; each request times out after `timeoutMs`; an overall deadline
 * ends the run. Prints one JSON line (OpenLoopReport) and exits.
 */

export interface OpenLoopJob {
  readonly url: string;
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | undefined;
  /** Requests per second. */
  readonly rate: number;
  /** Seconds whose requests are sent but not in the percentiles. */
  readonly warmupS: number;
  readonly durationS: number;
  readonly connections: number;
  readonly maxInFlight: number;
  readonly timeoutMs: number;
}

export interface OpenLoopReport {
  readonly scheduled: number;
  /** Requests that got a 200, warm-up included (the denominator of CPU per request). */
  readonly ok: number;
  /** Of those, after the warm-up: the latency samples. */
  readonly measured: number;
  readonly errors: number;
  readonly non200: number;
  readonly notSent: number;
  readonly errorSamples: readonly string[];
  /** 200s per second over the measured part. */
  readonly achievedRate: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  /** How late this process sent requests against their schedule (its own timer jitter, included in the latencies). */
  readonly sendLagP99Ms: number;
  /** CPU time of this process (user + system). */
  readonly clientCpuMs: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as OpenLoopJob;
  const url = new URL(job.url);
  const pool = new Pool(url.origin, { connections: job.connections, pipelining: 1, keepAliveTimeout: 60_000 });
  const total = Math.round(job.rate * (job.warmupS + job.durationS));
  const intervalMs = 1000 / job.rate;
  const latencies = new Float64Array(total);
  const lags = new Float64Array(total);
  const errorSamples = new Set<string>();
  let measured = 0;
  let ok = 0;
  let errors = 0;
  let non200 = 0;
  let notSent = 0;
  let inFlight = 0;
  let sent = 0;
  let settled = 0;

  // Start a little ahead, so the first requests are not already late.
  const t0 = performance.now() + 20;
  const measureFrom = t0 + job.warmupS * 1000;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const settle = (): void => {
    settled++;
    if (settled === total) finish();
  };

  const fire = (i: number): void => {
    const due = t0 + i * intervalMs;
    if (inFlight >= job.maxInFlight) {
      notSent++;
      settle();
      return;
    }
    lags[sent++] = performance.now() - due;
    inFlight++;
    pool
      .request({ path: `${url.pathname}${url.search}`, method: job.method as 'GET', headers: job.headers, body: job.body, headersTimeout: job.timeoutMs, bodyTimeout: job.timeoutMs })
      .then(async (res) => {
        await res.body.dump();
        const latency = performance.now() - due;
        if (res.statusCode !== 200) {
          non200++;
          if (errorSamples.size < 5) errorSamples.add(`HTTP ${res.statusCode}`);
          return;
        }
        ok++;
        if (due >= measureFrom) latencies[measured++] = latency;
      })
      .catch((err: Error) => {
        errors++;
        if (errorSamples.size < 5) errorSamples.add(err.message);
      })
      .finally(() => {
        inFlight--;
        settle();
      });
  };

  let next = 0;
  const tick = (): void => {
    const now = performance.now();
    while (next < total && t0 + next * intervalMs <= now) fire(next++);
    if (next < total) setTimeout(tick, Math.max(0, t0 + next * intervalMs - performance.now()));
  };
  setTimeout(tick, Math.max(0, t0 - performance.now()));

  // Every request settles within its timeout; the margin covers a stalled event loop.
  const deadlineMs = (job.warmupS + job.durationS) * 1000 + job.timeoutMs + 5000;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([finished, new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))]);
  clearTimeout(timer);
  if (settled < total) {
    errors += total - settled;
    errorSamples.add(`${total - settled} requests unsettled at the deadline`);
  }
  const sorted = latencies.subarray(0, measured).sort();
  const cpu = process.cpuUsage();
  const report: OpenLoopReport = {
    scheduled: total,
    ok,
    measured,
    errors,
    non200,
    notSent,
    errorSamples: [...errorSamples],
    achievedRate: measured / job.durationS,
    p50Ms: percentile(sorted, 50),
    p90Ms: percentile(sorted, 90),
    p99Ms: percentile(sorted, 99),
    p999Ms: percentile(sorted, 99.9),
    maxMs: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
    sendLagP99Ms: percentile(lags.subarray(0, sent).sort(), 99),
    clientCpuMs: (cpu.user + cpu.system) / 1000,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  await pool.destroy();
}

process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`open-loop-client: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
