import type { Meter, MeterProvider } from '@opentelemetry/api';
import { createNoopMeter, ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api';
import { ExportResultCode, SDK_INFO } from '@opentelemetry/core';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { TracingSettings } from '../config/telemetry-schema.ts';
import { createCallSpanStarter, remoteParent } from './call-spans.ts';
import { createTraceIds } from './trace-ids.ts';
import type { Tracing, TracingDeps } from './tracing-types.ts';

/*
 * Loaded only when tracing is on (tracing.ts imports it on demand): the SDK,
 * its propagators and the exporters are ~10 MB of a sidecar's memory and a
 * share of its start-up that a sidecar with tracing off does not pay.
 */

const B3_HEADERS = ['b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'] as const;

/**
 * The SDK part of a role's tracing (provider, batch processor, propagators,
 * OTLP exporter). Never throws: an exporter that cannot be built is
 * undefined after one warning (the caller turns tracing off), and export failures are logged once
 * until an export succeeds again (each failed span is counted).
 */
export async function createSdkTracing(settings: TracingSettings, deps: TracingDeps): Promise<Tracing | undefined> {
  const log = deps.logger.child({ component: 'tracing' });
  let inner: SpanExporter;
  try {
    inner = deps.exporter ?? (await createOtlpExporter(settings));
  } catch (err) {
    log.warn({ exporter: settings.exporter, endpoint: settings.endpoint, err: (err as Error).message }, 'tracing exporter could not be created; tracing is off');
    return undefined;
  }
  const stats = { exportedSpans: 0, failedSpans: 0, droppedSpans: 0 };
  let failing = false;
  const exporter: SpanExporter = {
    export(spans: ReadableSpan[], done) {
      const settle = (ok: boolean, error?: Error): void => {
        if (ok) {
          stats.exportedSpans += spans.length;
          if (failing) log.info({ endpoint: settings.endpoint }, 'trace export recovered');
          failing = false;
        } else {
          stats.failedSpans += spans.length;
          if (!failing) {
            log.warn(
              { endpoint: settings.endpoint, exporter: settings.exporter, err: error?.message },
              'trace export failed; spans are dropped (and counted) until the collector answers; reported again only after it recovers',
            );
          }
          failing = true;
        }
      };
      try {
        inner.export(spans, (result) => {
          settle(result.code === ExportResultCode.SUCCESS, result.error);
          done(result);
        });
      } catch (err) {
        settle(false, err as Error);
        done({ code: ExportResultCode.FAILED, error: err as Error });
      }
    },
    shutdown: () => inner.shutdown().catch(() => {}),
    forceFlush: () => inner.forceFlush?.().catch(() => {}) ?? Promise.resolve(),
  };

  const ids = createTraceIds();
  const rootSampler = new TraceIdRatioBasedSampler(settings.samplingRatio);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'telemetry.sdk.name': SDK_INFO['telemetry.sdk.name'] ?? 'opentelemetry',
      'telemetry.sdk.language': SDK_INFO['telemetry.sdk.language'] ?? 'nodejs',
      'telemetry.sdk.version': SDK_INFO['telemetry.sdk.version'] ?? '',
      ...settings.resourceAttributes,
      ...deps.resource,
      'service.name': settings.serviceName,
    }),
    sampler: new ParentBasedSampler({ root: rootSampler }),
    idGenerator: ids,
    spanLimits: { attributeValueLengthLimit: 1024 },
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        maxQueueSize: settings.batch.maxQueueSize,
        maxExportBatchSize: settings.batch.maxExportBatchSize,
        scheduledDelayMillis: settings.batch.scheduledDelayMs,
        exportTimeoutMillis: settings.timeoutMs + 1_000,
        selfObsMeterProvider: droppedSpanCounter(() => {
          stats.droppedSpans++;
          if (stats.droppedSpans === 1)
            log.warn({ maxQueueSize: settings.batch.maxQueueSize }, 'trace export queue full; new spans are dropped (counted in meshgate_trace_spans_total{result="dropped"})');
        }),
      }),
    ],
  });
  const tracer = provider.getTracer('meshgate');
  const b3 = new B3Propagator();
  let closed: Promise<void> | undefined;
  return {
    tracer,
    settings,
    extract(headers) {
      const parent = remoteParent(headers, b3);
      return parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
    },
    startCallSpan: createCallSpanStarter(tracer, rootSampler, ids, b3),
    inject(span, headers) {
      // Written by hand rather than through the propagator: no Context allocated per call, and no
      // `delete` of absent names (which pushes V8 objects into slow mode) on the hot path.
      for (const name of B3_HEADERS) if (headers[name] !== undefined) delete headers[name];
      const sc = span.spanContext();
      if (!trace.isSpanContextValid(sc)) {
        if (headers.traceparent !== undefined) delete headers.traceparent;
        if (headers.tracestate !== undefined) delete headers.tracestate;
        return;
      }
      headers.traceparent = `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? '01' : '00'}`;
      const state = sc.traceState?.serialize();
      if (state) headers.tracestate = state;
      else if (headers.tracestate !== undefined) delete headers.tracestate;
    },
    stats: () => ({ ...stats }),
    forceFlush: () => provider.forceFlush({ timeoutMillis: settings.timeoutMs }).catch(() => {}),
    shutdown() {
      // Bounded: a collector that is down must not hold a draining process past its export timeout.
      closed ??= Promise.race([provider.shutdown().catch(() => {}), new Promise<void>((resolve) => setTimeout(resolve, Math.min(settings.timeoutMs, 5_000)).unref())]);
      return closed;
    },
  };
}

async function createOtlpExporter(settings: TracingSettings): Promise<SpanExporter> {
  const compression = settings.compression === 'gzip' ? 'gzip' : 'none';
  if (settings.exporter === 'otlp-grpc') {
    const [{ OTLPTraceExporter }, grpc] = await Promise.all([import('@opentelemetry/exporter-trace-otlp-grpc'), import('@grpc/grpc-js')]);
    const metadata = new grpc.Metadata();
    for (const [name, value] of Object.entries(settings.headers)) metadata.set(name, value);
    return new OTLPTraceExporter({
      url: settings.endpoint,
      metadata,
      timeoutMillis: settings.timeoutMs,
      compression: compression as never,
      credentials: settings.endpoint.startsWith('https:') ? grpc.credentials.createSsl() : grpc.credentials.createInsecure(),
    });
  }
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
  return new OTLPTraceExporter({ url: settings.endpoint, headers: { ...settings.headers }, timeoutMillis: settings.timeoutMs, compression: compression as never });
}

/**
 * The batch processor reports dropped spans only through a MeterProvider; this
 * one hears that single counter (`error.type=queue_full`) and ignores the rest.
 */
function droppedSpanCounter(onDrop: () => void): MeterProvider {
  const noop = createNoopMeter();
  const meter = Object.create(noop) as Meter;
  meter.createCounter = ((name: string, options?: unknown) => {
    if (name !== 'otel.sdk.processor.span.processed') return noop.createCounter(name, options as never);
    return {
      add(count: number, attributes?: Record<string, unknown>) {
        if (attributes?.['error.type'] === 'queue_full') for (let i = 0; i < count; i++) onDrop();
      },
    };
  }) as Meter['createCounter'];
  return { getMeter: () => meter };
}
