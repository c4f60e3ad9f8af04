import type { Context, Meter, MeterProvider, Span, Tracer } from '@opentelemetry/api';
import { createNoopMeter, ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api';
import { ExportResultCode, SDK_INFO, W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { TracingConfig, TracingSettings } from '../config/telemetry-schema.ts';
import { resolveTracingSettings } from '../config/telemetry-schema.ts';
import type { Logger } from './logger.ts';

/** Incoming headers (node:http's shape) or outgoing ones (what undici takes). */
export type HeaderCarrier = Record<string, string | string[] | undefined>;

interface TracingStats {
  /** Spans the collector accepted. */
  readonly exportedSpans: number;
  /** Spans in export requests that failed (collector down, refused, timed out). */
  readonly failedSpans: number;
  /** Spans dropped because the export queue was full. */
  readonly droppedSpans: number;
}

/**
 * One role's tracing: a TracerProvider of its own (never the global one, so
 * two roles in one process keep apart), W3C + B3 extraction, W3C injection.
 * When tracing is off `tracer` is undefined and callers skip all span work:
 * off costs nothing on the data path.
 */
export interface Tracing {
  readonly tracer: Tracer | undefined;
  readonly settings: TracingSettings;
  /**
   * The caller's trace context: W3C `traceparent`/`tracestate` when present,
   * else B3 (single `b3` header or `x-b3-*`). An invalid header is ignored.
   */
  extract(headers: HeaderCarrier): Context;
  /**
   * Writes `span` as the parent of the next hop: W3C `traceparent` and
   * `tracestate`, replacing any the caller sent, and drops B3 headers so the
   * next hop cannot pick up the caller's span and skip ours. `baggage` is
   * left as it came.
   */
  inject(span: Span, headers: HeaderCarrier): void;
  stats(): TracingStats;
  /** Exports what is queued (on drain and before exit). */
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

const B3_HEADERS = ['b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'] as const;

const headerGetter = {
  get(carrier: HeaderCarrier, key: string): string | string[] | undefined {
    return carrier[key];
  },
  keys(carrier: HeaderCarrier): string[] {
    return Object.keys(carrier);
  },
};

const NO_STATS: TracingStats = Object.freeze({ exportedSpans: 0, failedSpans: 0, droppedSpans: 0 });

/** Tracing off: no provider, no exporter, headers pass through untouched. */
export function tracingOff(settings: TracingSettings): Tracing {
  return {
    tracer: undefined,
    settings,
    extract: () => ROOT_CONTEXT,
    inject: () => {},
    stats: () => NO_STATS,
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/** Tracing off for a role run without the CLI (the demo, benchmarks): no exporter, headers untouched. */
export function noTracing(serviceName: string): Tracing {
  return tracingOff(resolveTracingSettings(undefined, {}, { serviceName }).settings);
}

export interface TracingDeps {
  readonly logger: Logger;
  /** Resource attributes of the role (`meshgate.role`, `service.namespace`, ...); `service.name` comes from the settings. */
  readonly resource?: Readonly<Record<string, string>>;
  /** Makes the exporter; tests pass one that records. Default: OTLP as the settings say. */
  readonly exporter?: SpanExporter;
}

/**
 * Starts a role's tracing. Never throws: an exporter that cannot be built
 * turns tracing off with one warning, and export failures are logged once
 * until an export succeeds again (each failed span is counted).
 */
export async function createTracing(settings: TracingSettings, deps: TracingDeps): Promise<Tracing> {
  if (settings.exporter === 'none' && !deps.exporter) return tracingOff(settings);
  const log = deps.logger.child({ component: 'tracing' });
  let inner: SpanExporter;
  try {
    inner = deps.exporter ?? (await createOtlpExporter(settings));
  } catch (err) {
    log.warn({ exporter: settings.exporter, endpoint: settings.endpoint, err: (err as Error).message }, 'tracing exporter could not be created; tracing is off');
    return tracingOff(settings);
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

  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'telemetry.sdk.name': SDK_INFO['telemetry.sdk.name'] ?? 'opentelemetry',
      'telemetry.sdk.language': SDK_INFO['telemetry.sdk.language'] ?? 'nodejs',
      'telemetry.sdk.version': SDK_INFO['telemetry.sdk.version'] ?? '',
      ...settings.resourceAttributes,
      ...deps.resource,
      'service.name': settings.serviceName,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.samplingRatio) }),
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
  const w3c = new W3CTraceContextPropagator();
  const b3 = new B3Propagator();
  let closed: Promise<void> | undefined;
  return {
    tracer,
    settings,
    extract(headers) {
      try {
        if (headers.traceparent !== undefined) {
          const ctx = w3c.extract(ROOT_CONTEXT, headers, headerGetter);
          if (trace.getSpanContext(ctx)) return ctx;
        }
        if (headers.b3 !== undefined || headers['x-b3-traceid'] !== undefined) return b3.extract(ROOT_CONTEXT, headers, headerGetter);
      } catch {
        // A malformed header starts a new trace; it never fails the call.
      }
      return ROOT_CONTEXT;
    },
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

/** Who a role's spans come from: the default `service.name` and the role's resource attributes. */
export interface TracingIdentity {
  readonly serviceName: string;
  readonly resource: Readonly<Record<string, string>>;
}

/**
 * A role's tracing from its `telemetry.tracing` section and the environment
 * the CLI read: resolves the settings, reports each value that fell back to a
 * default once, and starts the SDK. Never throws.
 */
export async function startTracing(section: TracingConfig | undefined, env: Readonly<Record<string, string | undefined>>, deps: TracingDeps & { readonly serviceName: string }): Promise<Tracing> {
  const { settings, warnings } = resolveTracingSettings(section, env, { serviceName: deps.serviceName });
  for (const warning of warnings) deps.logger.warn({ component: 'tracing' }, `bad telemetry setting: ${warning}`);
  const tracing = await createTracing(settings, deps);
  if (tracing.tracer) {
    deps.logger.info({ component: 'tracing', exporter: settings.exporter, endpoint: settings.endpoint, samplingRatio: settings.samplingRatio, serviceName: settings.serviceName }, 'tracing on');
  }
  return tracing;
}
