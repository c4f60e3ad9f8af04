import { setImmediate as nextTurn } from 'node:timers/promises';
import pino from 'pino';
import type { TracingConfig } from '../../src/config/telemetry-schema.ts';
import { resolveTracingSettings } from '../../src/config/telemetry-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import { createCallContext } from '../../src/proxy/call.ts';
import type { CallTelemetry } from '../../src/proxy/call-telemetry.ts';
import { beginCall, propagateTrace, recordCall } from '../../src/proxy/call-telemetry.ts';
import type { DownstreamRequest } from '../../src/proxy/listener.ts';
import { createRequestIds } from '../../src/proxy/request-ids.ts';
import { createAccessLog } from '../../src/telemetry/access-log.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { createSidecarMetrics } from '../../src/telemetry/metrics.ts';
import type { Tracing } from '../../src/telemetry/tracing.ts';
import { createTracing, tracingOff } from '../../src/telemetry/tracing.ts';
import type { TelemetryMix } from './target-meshgate-telemetry.ts';

/*
 * The CPU one call's telemetry costs, in process, without sockets: the
 * sidecar's own functions (beginCall -> propagateTrace -> recordCall) on a
 * GET, once as an outbound call and once as the inbound call it becomes,
 * the way one request through the bench rows makes two. Spans go through
 * the real SDK, batch processor and OTLP/HTTP exporter (to the sink);
 * access lines through pino into /dev/null. Measured with
 * process.cpuUsage(), which counts the background export work too, and
 * far steadier than req/s on a shared machine.
 */

export interface CallCostResult {
  readonly id: string;
  readonly label: string;
  /** CPU nanoseconds per request (two calls), median of the repetitions. */
  readonly ns: number;
}

async function telemetryFor(mix: TelemetryMix, sinkUrl: string): Promise<{ telemetry: CallTelemetry; tracing: Tracing }> {
  // As the sidecar writes (asynchronously), into /dev/null.
  const destination = pino.destination({ dest: '/dev/null', sync: false }) as unknown as NodeJS.WritableStream;
  const logger = createLogger({ level: 'warn', name: 'bench', destination });
  const metrics = createSidecarMetrics({ defaultMetrics: false });
  const section = { exporter: 'otlp-http', endpoint: sinkUrl, samplingRatio: mix.tracing ?? 1, batch: { scheduledDelay: 200 } } as TracingConfig;
  const tracing =
    mix.tracing === undefined
      ? tracingOff(resolveTracingSettings(undefined, {}, { serviceName: 'bench' }).settings)
      : await createTracing(resolveTracingSettings(section, {}, { serviceName: 'bench.default' }).settings, { logger });
  const telemetry: CallTelemetry = {
    clock: systemClock,
    metrics,
    accessLog: createAccessLog(logger, { enabled: mix.accessLog, sampling: mix.logSampling ?? 1, random: Math.random }),
    tracing,
    requestMetrics: mix.metrics,
  };
  return { telemetry, tracing };
}

function fakeRequest(headers: Record<string, string>): DownstreamRequest {
  return { httpVersion: '1.1', method: 'GET', url: '/orders/1', headers, rawHeaders: [], socket: { remoteAddress: '127.0.0.1', remotePort: 40000 } } as unknown as DownstreamRequest;
}

const TARGET = { method: 'GET', path: '/orders/1', query: '', authority: 'bench' };
const newRequestId = createRequestIds();

function benchCall(req: DownstreamRequest, direction: 'outbound' | 'inbound'): ReturnType<typeof createCallContext> {
  return createCallContext(req, TARGET, { direction, startedAt: systemClock.monotonic(), destination: { service: 'bench', namespace: 'default' }, principal: undefined, newRequestId });
}

function oneRequest(t: CallTelemetry): void {
  const outReq = fakeRequest({ host: 'bench', 'user-agent': 'wrk', accept: '*/*' });
  const out = benchCall(outReq, 'outbound');
  const outRec = beginCall(t, out, outReq, 'bench.default');
  const forwarded: Record<string, string | string[]> = { host: 'bench', 'user-agent': 'wrk', accept: '*/*', 'x-request-id': out.id };
  propagateTrace(t, outRec, forwarded);
  const inReq = fakeRequest(forwarded as Record<string, string>);
  const inb = benchCall(inReq, 'inbound');
  const inRec = beginCall(t, inb, inReq, 'bench.default');
  propagateTrace(t, inRec, { host: 'bench' });
  inb.annotations.upstream = '127.0.0.1:8080';
  recordCall(t, inb, { status: 200, reason: undefined, bytesOut: 100 }, inRec);
  out.annotations.upstream = '127.0.0.1:15006';
  recordCall(t, out, { status: 200, reason: undefined, bytesOut: 100 }, outRec);
}

export async function measureCallCost(
  rows: ReadonlyArray<{ id: string; label: string; mix: TelemetryMix }>,
  sinkUrl: string,
  opts: { requests?: number; repetitions?: number } = {},
): Promise<CallCostResult[]> {
  const requests = opts.requests ?? 20_000;
  const repetitions = opts.repetitions ?? 5;
  const built = await Promise.all(rows.map(async (row) => ({ row, ...(await telemetryFor(row.mix, sinkUrl)) })));
  const samples = new Map<string, number[]>(rows.map((r) => [r.id, []]));
  // A warm-up round, then interleaved rounds: JIT, GC and neighbours weigh on every row alike.
  for (let round = 0; round <= repetitions; round++) {
    for (const { row, telemetry, tracing } of built) {
      const before = process.cpuUsage();
      for (let i = 0; i < requests; i++) {
        oneRequest(telemetry);
        // Let the exporter's I/O and the log's writes happen, as the event loop would between calls.
        if (i % 500 === 499) await nextTurn();
      }
      await tracing.forceFlush();
      const used = process.cpuUsage(before);
      if (round > 0) samples.get(row.id)!.push(((used.user + used.system) * 1000) / requests);
    }
  }
  await Promise.all(built.map((b) => b.tracing.shutdown()));
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  return rows.map((row) => ({ id: row.id, label: row.label, ns: median(samples.get(row.id)!) }));
}
