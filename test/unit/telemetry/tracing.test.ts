import { SpanKind, trace } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import { ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { TracingSettings } from '../../../src/config/telemetry-schema.ts';
import { TRACING_OFF_SETTINGS } from '../../../src/config/telemetry-schema.ts';
import { createTracing, startTracing } from '../../../src/telemetry/tracing.ts';
import { registerTracingMetrics } from '../../../src/telemetry/tracing-metrics.ts';
import { captureLogs } from '../../helpers/log-capture.ts';

function capture() {
  return captureLogs();
}

/** An exporter whose answers the test decides. */
function scriptedExporter() {
  const received: ReadableSpan[][] = [];
  let answer: ExportResult = { code: ExportResultCode.SUCCESS };
  const exporter: SpanExporter = {
    export(spans, done) {
      received.push(spans);
      setImmediate(() => done(answer));
    },
    shutdown: () => Promise.resolve(),
  };
  return { exporter, received, answer: (next: ExportResult) => (answer = next) };
}

const settings = (extra: Partial<TracingSettings> = {}): TracingSettings => ({
  ...TRACING_OFF_SETTINGS,
  exporter: 'otlp-http',
  endpoint: 'http://collector.invalid/v1/traces',
  serviceName: 'unit',
  batch: { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 5 },
  ...extra,
});

describe('propagation', () => {
  it('extracts W3C first, else B3 single, else B3 multi; a malformed header starts a new trace', async () => {
    const { logger } = capture();
    const tracing = await createTracing(settings(), { logger, exporter: scriptedExporter().exporter });
    const ctxOf = (headers: Record<string, string>) => trace.getSpanContext(tracing.extract(headers));
    const t = '4bf92f3577b34da6a3ce929d0e0e4736';
    expect(ctxOf({ traceparent: `00-${t}-00f067aa0ba902b7-01`, b3: `${'1'.repeat(32)}-${'2'.repeat(16)}-1` })).toMatchObject({ traceId: t, spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true });
    expect(ctxOf({ b3: `${t}-00f067aa0ba902b7-0` })).toMatchObject({ traceId: t, spanId: '00f067aa0ba902b7', traceFlags: 0 });
    expect(ctxOf({ 'x-b3-traceid': t, 'x-b3-spanid': '00f067aa0ba902b7', 'x-b3-sampled': '1' })).toMatchObject({ traceId: t, traceFlags: 1 });
    expect(ctxOf({ traceparent: 'garbage' })).toBeUndefined();
    expect(ctxOf({ traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` })).toBeUndefined();
    expect(ctxOf({})).toBeUndefined();
    await tracing.shutdown();
  });

  it('injects W3C (traceparent, tracestate) and drops the B3 headers; baggage passes untouched', async () => {
    const { logger } = capture();
    const tracing = await createTracing(settings(), { logger, exporter: scriptedExporter().exporter });
    const parent = tracing.extract({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'a=1,b=2' });
    const span = tracing.tracer!.startSpan('child', { kind: SpanKind.CLIENT }, parent);
    const headers: Record<string, string | string[] | undefined> = { b3: 'x', 'x-b3-traceid': 'y', 'x-b3-spanid': 'z', tracestate: 'stale=1', baggage: 'k=v' };
    tracing.inject(span, headers);
    expect(headers).toEqual({ traceparent: `00-4bf92f3577b34da6a3ce929d0e0e4736-${span.spanContext().spanId}-01`, tracestate: 'a=1,b=2', baggage: 'k=v' });
    span.end();
    await tracing.shutdown();
  });

  it('samples new traces by ratio and follows the caller when it decided', async () => {
    const { logger } = capture();
    const tracing = await createTracing(settings({ samplingRatio: 0 }), { logger, exporter: scriptedExporter().exporter });
    const root = tracing.tracer!.startSpan('root');
    expect(root.isRecording()).toBe(false);
    const followed = tracing.tracer!.startSpan('child', {}, tracing.extract({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }));
    expect(followed.isRecording()).toBe(true);
    await tracing.shutdown();
  });
});

describe('call spans: sampled before the SDK is asked', () => {
  const T = '4bf92f3577b34da6a3ce929d0e0e4736';
  const P = '00f067aa0ba902b7';

  it('a caller that did not sample gets a non-recording span in its trace, fresh span ID, tracestate kept, nothing exported', async () => {
    const { logger } = capture();
    const sink = scriptedExporter();
    const tracing = await createTracing(settings({ samplingRatio: 1 }), { logger, exporter: sink.exporter });
    const span = tracing.startCallSpan('GET', SpanKind.SERVER, { traceparent: `00-${T}-${P}-00`, tracestate: 'vendor=x' })!;
    expect(span.isRecording()).toBe(false);
    const sc = span.spanContext();
    expect(sc).toMatchObject({ traceId: T, traceFlags: 0 });
    expect(sc.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(sc.spanId).not.toBe(P);
    const next: Record<string, string | string[] | undefined> = {};
    tracing.inject(span, next);
    expect(next).toEqual({ traceparent: `00-${T}-${sc.spanId}-00`, tracestate: 'vendor=x' });
    span.end();
    await tracing.forceFlush();
    expect(sink.received.flat()).toHaveLength(0);
    await tracing.shutdown();
  });

  it('a caller that sampled gets a recording child, exported with its parent (W3C and B3), even at ratio 0', async () => {
    const { logger } = capture();
    const sink = scriptedExporter();
    const tracing = await createTracing(settings({ samplingRatio: 0 }), { logger, exporter: sink.exporter });
    tracing.startCallSpan('GET', SpanKind.SERVER, { traceparent: `00-${T}-${P}-01` })!.end();
    tracing.startCallSpan('POST orders.shop', SpanKind.CLIENT, { b3: `${T}-${P}-1` })!.end();
    await tracing.forceFlush();
    const spans = sink.received.flat();
    expect(spans.map((s) => [s.name, s.kind, s.spanContext().traceId, s.parentSpanContext?.spanId])).toEqual([
      ['GET', SpanKind.SERVER, T, P],
      ['POST orders.shop', SpanKind.CLIENT, T, P],
    ]);
    await tracing.shutdown();
  });

  it('a new trace is sampled at the ratio, each sampled span exported under the trace ID it was sampled by', async () => {
    const { logger } = capture();
    const sink = scriptedExporter();
    const tracing = await createTracing(settings({ samplingRatio: 0.5, batch: { maxQueueSize: 4096, maxExportBatchSize: 512, scheduledDelayMs: 5 } }), {
      logger,
      exporter: sink.exporter,
    });
    const calls = 2000;
    const started = Array.from({ length: calls }, () => tracing.startCallSpan('GET', SpanKind.SERVER, {})!);
    const sampled = started.filter((s) => s.isRecording());
    for (const span of started) span.end();
    await tracing.forceFlush();
    // The SDK samples again by the trace ID it draws: a root sampled here but given a fresh ID would be kept at ratio² (~500 of 2 000).
    expect(sampled.length).toBeGreaterThan(calls * 0.4);
    expect(sampled.length).toBeLessThan(calls * 0.6);
    const exported = sink.received.flat();
    expect(exported.map((s) => s.spanContext().spanId).sort()).toEqual(sampled.map((s) => s.spanContext().spanId).sort());
    const unsampledIds = new Set(started.filter((s) => !sampled.includes(s)).map((s) => s.spanContext().traceId));
    expect(unsampledIds.size).toBe(calls - sampled.length); // every new trace its own random ID
    for (const s of exported) expect(unsampledIds.has(s.spanContext().traceId)).toBe(false);
    await tracing.shutdown();
  });

  it('a malformed traceparent starts a new trace; tracing off starts no span', async () => {
    const { logger } = capture();
    const tracing = await createTracing(settings({ samplingRatio: 0 }), { logger, exporter: scriptedExporter().exporter });
    const span = tracing.startCallSpan('GET', SpanKind.SERVER, { traceparent: `00-${T}-${'0'.repeat(16)}-01` })!;
    expect(span.isRecording()).toBe(false);
    expect(span.spanContext().traceId).not.toBe(T);
    expect(span.spanContext().traceId).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
    await tracing.shutdown();
    const off = await createTracing(TRACING_OFF_SETTINGS, { logger });
    expect(off.startCallSpan('GET', SpanKind.SERVER, { traceparent: `00-${T}-${P}-01` })).toBeUndefined();
  });
});

describe('degraded modes: never a throw, one warning, a count', () => {
  it('a collector that fails is reported once until it recovers; every failed span is counted', async () => {
    const { lines, logger } = capture();
    const scripted = scriptedExporter();
    const tracing = await createTracing(settings(), { logger, exporter: scripted.exporter });
    const registry = new Registry();
    registerTracingMetrics(registry, tracing);
    scripted.answer({ code: ExportResultCode.FAILED, error: new Error('connect ECONNREFUSED') });
    for (let round = 0; round < 3; round++) {
      tracing.tracer!.startSpan(`s${round}`).end();
      await tracing.forceFlush();
    }
    expect(lines.filter((l) => l.msg?.toString().startsWith('trace export failed'))).toHaveLength(1);
    expect(lines.find((l) => String(l.msg).startsWith('trace export failed'))).toMatchObject({ level: 40, err: 'connect ECONNREFUSED', endpoint: 'http://collector.invalid/v1/traces' });
    expect(tracing.stats()).toMatchObject({ failedSpans: 3, exportedSpans: 0 });
    scripted.answer({ code: ExportResultCode.SUCCESS });
    tracing.tracer!.startSpan('ok').end();
    await tracing.forceFlush();
    expect(lines.filter((l) => l.msg === 'trace export recovered')).toHaveLength(1);
    expect(await registry.getSingleMetricAsString('meshgate_trace_spans_total')).toContain('meshgate_trace_spans_total{result="failed"} 3');
    expect(await registry.getSingleMetricAsString('meshgate_trace_spans_total')).toContain('meshgate_trace_spans_total{result="exported"} 1');
    await tracing.shutdown();
  });

  it('a full export queue drops new spans, counts each, warns once', async () => {
    const { lines, logger } = capture();
    const stuck: SpanExporter = { export: () => {}, shutdown: () => Promise.resolve() };
    const tracing = await createTracing(settings({ batch: { maxQueueSize: 4, maxExportBatchSize: 4, scheduledDelayMs: 60_000 } }), { logger, exporter: stuck });
    for (let i = 0; i < 14; i++) tracing.tracer!.startSpan(`s${i}`).end();
    // 4 fill the queue and leave in one (never answered) export; 4 more queue; the rest drop.
    expect(tracing.stats().droppedSpans).toBe(6);
    expect(lines.filter((l) => String(l.msg).startsWith('trace export queue full'))).toHaveLength(1);
  });

  it('an exporter that throws is a failed export, never an exception in the caller', async () => {
    const { logger } = capture();
    const throwing: SpanExporter = {
      export: () => {
        throw new Error('boom');
      },
      shutdown: () => Promise.resolve(),
    };
    const tracing = await createTracing(settings(), { logger, exporter: throwing });
    expect(() => tracing.tracer!.startSpan('s').end()).not.toThrow();
    await tracing.forceFlush();
    expect(tracing.stats().failedSpans).toBe(1);
    await tracing.shutdown();
  });

  it('a bad setting is logged once at start, and tracing starts with the safe default', async () => {
    const { lines, logger } = capture();
    const tracing = await startTracing({ batch: {}, exporter: 'otlp-http', endpoint: '::nonsense' } as never, {}, { logger, serviceName: 'x' });
    expect(tracing.tracer).toBeUndefined();
    expect(lines.map((l) => l.msg)).toEqual(['bad telemetry setting: telemetry.tracing.endpoint: not a URL ("::nonsense"); tracing export is off']);
    const headers: Record<string, string> = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', b3: 'kept' };
    tracing.inject(trace.wrapSpanContext({ traceId: '1'.repeat(32), spanId: '2'.repeat(16), traceFlags: 1 }), headers);
    expect(headers.b3).toBe('kept'); // off: headers pass through untouched
  });
});
