import type { Attributes, Link, Span, SpanContext, SpanKind, TextMapPropagator, Tracer } from '@opentelemetry/api';
import { ROOT_CONTEXT, TraceFlags, trace } from '@opentelemetry/api';
import { parseTraceParent, TraceState } from '@opentelemetry/core';
import type { Sampler } from '@opentelemetry/sdk-trace';
import { SamplingDecision } from '@opentelemetry/sdk-trace';
import type { TraceIds } from './trace-ids.ts';
import type { HeaderCarrier } from './tracing-types.ts';

const headerGetter = {
  get(carrier: HeaderCarrier, key: string): string | string[] | undefined {
    return carrier[key];
  },
  keys(carrier: HeaderCarrier): string[] {
    return Object.keys(carrier);
  },
};

/**
 * The caller's span context: W3C `traceparent` (with `tracestate`) when it
 * parses, else B3 (single `b3` or `x-b3-*`), else undefined. A malformed
 * header is ignored: the call starts a new trace, never fails.
 */
export function remoteParent(headers: HeaderCarrier, b3: TextMapPropagator): SpanContext | undefined {
  try {
    const raw = headers.traceparent;
    if (raw !== undefined) {
      const value = Array.isArray(raw) ? raw[0] : raw;
      // The W3C propagator's own parser (version, all-zero IDs, the `ff` version), without the Context it would build around it.
      const parsed = typeof value === 'string' ? parseTraceParent(value) : null;
      if (parsed) {
        // A fresh object from the parser, completed in place as the propagator does: no copy per call.
        parsed.isRemote = true;
        const state = headers.tracestate;
        if (state !== undefined && state !== '') parsed.traceState = new TraceState(Array.isArray(state) ? state.join(',') : state);
        return parsed;
      }
    }
    if (headers.b3 !== undefined || headers['x-b3-traceid'] !== undefined) return trace.getSpanContext(b3.extract(ROOT_CONTEXT, headers, headerGetter));
  } catch {
    // A header the propagator chokes on starts a new trace.
  }
  return undefined;
}

/** What the root sampler is shown: the samplers here read only the trace ID, so nothing is built per call. */
const NO_ATTRIBUTES: Attributes = Object.freeze({});
const NO_LINKS: Link[] = [];

export type CallSpanStarter = (name: string, kind: SpanKind, headers: HeaderCarrier) => Span;

/**
 * Starts each proxied call's span, deciding sampling before the SDK is asked:
 * the decision the provider's ParentBased(TraceIdRatio) sampler would take
 * (follow a caller that decided, else the ratio over the trace ID). A call
 * that is not sampled (most, at the usual 1%) gets a non-recording span with
 * fresh IDs, which is all the SDK would have returned too, without its
 * Context, sampler and span metrics on every call; the trace context still
 * travels on to the next hop. A sampled call is the SDK's own span.
 */
export function createCallSpanStarter(tracer: Tracer, rootSampler: Sampler, ids: TraceIds, b3: TextMapPropagator): CallSpanStarter {
  return (name, kind, headers) => {
    const parent = remoteParent(headers, b3);
    if (parent) {
      if (parent.traceFlags & TraceFlags.SAMPLED) return tracer.startSpan(name, { kind }, trace.setSpanContext(ROOT_CONTEXT, parent));
      return trace.wrapSpanContext({ traceId: parent.traceId, spanId: ids.spanId(), traceFlags: TraceFlags.NONE, traceState: parent.traceState });
    }
    const traceId = ids.traceId();
    if (rootSampler.shouldSample(ROOT_CONTEXT, traceId, name, kind, NO_ATTRIBUTES, NO_LINKS).decision !== SamplingDecision.RECORD_AND_SAMPLED) {
      return trace.wrapSpanContext({ traceId, spanId: ids.spanId(), traceFlags: TraceFlags.NONE });
    }
    // The SDK draws the root's trace ID itself; it must be this one, which its sampler then samples again.
    ids.adoptTraceId(traceId);
    try {
      return tracer.startSpan(name, { kind }, ROOT_CONTEXT);
    } finally {
      ids.adoptTraceId(undefined);
    }
  };
}
