import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import type { NegotiatedTls } from './tls-connection.ts';
import { connectOnce, createClientContext, negotiatedOf } from './tls-connection.ts';

/*
 * The load generator of `npm run bench:tls`, in its own process so it never
 * shares an event loop (or a core's time slice) with the target:
 *
 *   node bench/lib/tls-client.ts '<json TlsClientJob>'
 *
 * N loops, each: new connection, full mutual-TLS handshake, one request, read
 * to the end, close; next. Stops starting connections after the duration,
 * waits for those in flight, prints one JSON line (TlsClientReport) and exits.
 *
 * Why this and not `openssl s_time -new`: s_time runs one connection at a
 * time, so the server idles through the client's half of every handshake and
 * the figure is one connection's round trip, not what the server sustains.
 * Several s_time processes in parallel get concurrency back, but each reports
 * only a count over its own clock (no latency percentiles), cannot offer ALPN,
 * sends an HTTP/1.0 request without Host, and does not check the status. This
 * client keeps N handshakes in flight on one clock, records every latency,
 * checks every status and that no session was resumed. In trials on the
 * 2-core machine (16 loops vs 4 s_time processes, against nginx, runs
 * alternating) the two gave the same server CPU per connection and similar
 * run-to-run spread; s_time needs somewhat less CPU per connection itself.
 */

export interface TlsClientJob {
  readonly host: string;
  readonly port: number;
  readonly connections: number;
  readonly durationS: number;
  readonly keyFile: string;
  readonly certFile: string;
  readonly caFile: string;
  readonly groups: string | undefined;
}

export interface TlsClientReport {
  readonly completed: number;
  readonly errors: number;
  readonly non200: number;
  readonly reused: number;
  readonly errorSamples: readonly string[];
  readonly elapsedS: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly handshakeP50Ms: number;
  readonly handshakeP99Ms: number;
  /** CPU time of this process (user + system) since it started. */
  readonly clientCpuMs: number;
  readonly negotiated: NegotiatedTls | undefined;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as TlsClientJob;
  const context = createClientContext({ keyPem: readFileSync(job.keyFile, 'utf8'), certPem: readFileSync(job.certFile, 'utf8'), caPem: readFileSync(job.caFile, 'utf8') }, job.groups);
  const target = { host: job.host, port: job.port, timeoutMs: 5000 };
  const totals: number[] = [];
  const handshakes: number[] = [];
  const errorSamples = new Set<string>();
  let errors = 0;
  let non200 = 0;
  let reused = 0;
  let negotiated: NegotiatedTls | undefined;
  const captureOnce = (socket: TLSSocket): void => {
    if (negotiated === undefined) negotiated = negotiatedOf(socket);
  };

  const t0 = performance.now();
  const stopAt = t0 + job.durationS * 1000;
  let lastDone = t0;
  await Promise.all(
    Array.from({ length: job.connections }, async () => {
      while (performance.now() < stopAt) {
        const outcome = await connectOnce(target, context, negotiated === undefined ? captureOnce : undefined);
        lastDone = performance.now();
        if (!outcome.ok) {
          errors++;
          if (errorSamples.size < 5) errorSamples.add(outcome.error);
          continue;
        }
        if (outcome.reused) reused++;
        if (outcome.status !== 200) {
          non200++;
          if (errorSamples.size < 5) errorSamples.add(`HTTP ${outcome.status}`);
          continue;
        }
        totals.push(outcome.totalMs);
        handshakes.push(outcome.handshakeMs);
      }
    }),
  );
  const elapsedS = (lastDone - t0) / 1000;
  const sortedTotals = Float64Array.from(totals).sort();
  const sortedHandshakes = Float64Array.from(handshakes).sort();
  const cpu = process.cpuUsage();
  const report: TlsClientReport = {
    completed: totals.length,
    errors,
    non200,
    reused,
    errorSamples: [...errorSamples],
    elapsedS,
    perSecond: elapsedS > 0 ? totals.length / elapsedS : 0,
    p50Ms: percentile(sortedTotals, 50),
    p99Ms: percentile(sortedTotals, 99),
    handshakeP50Ms: percentile(sortedHandshakes, 50),
    handshakeP99Ms: percentile(sortedHandshakes, 99),
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    negotiated,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`tls-client: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
