import type { Context, Span, SpanKind, Tracer } from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import type { TracingSettings } from '../config/telemetry-schema.ts';
import type { Logger } from './logger.ts';

/** Incoming headers (node:http's shape) or outgoing ones (what undici takes). */
export type HeaderCarrier = Record<string, string | string[] | undefined>;

export interface TracingStats {
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
   * A proxied call's span (server inbound, client outbound) under the
   * caller's context as `extract` reads it, sampled as the provider's sampler
   * would; undefined when tracing is off. Unsampled calls get a
   * non-recording span without the SDK's per-span work.
   */
  startCallSpan(name: string, kind: SpanKind, headers: HeaderCarrier): Span | undefined;
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

export interface TracingDeps {
  readonly logger: Logger;
  /** Resource attributes of the role (`meshgate.role`, `service.namespace`, ...); `service.name` comes from the settings. */
  readonly resource?: Readonly<Record<string, string>>;
  /** Makes the exporter; tests pass one that records. Default: OTLP as the settings say. */
  readonly exporter?: SpanExporter;
}
