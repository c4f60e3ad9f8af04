import type { Attributes, Span } from '@opentelemetry/api';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { CallContext, Direction } from '../core/call-context.ts';
import type { Clock } from '../core/clock.ts';
import { reasonCode } from '../core/reason-codes.ts';
import type { RespondVerdict } from '../core/verdict.ts';
import { respond } from '../core/verdict.ts';
import { sendVerdict } from '../errors/reply.ts';
import type { AccessLog } from '../telemetry/access-log.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import type { Tracing } from '../telemetry/tracing.ts';
import type { TargetRefusal } from './call.ts';
import type { Rejection } from './connection-guard.ts';
import { requestRejection } from './connection-guard.ts';
import type { DownstreamRequest, DownstreamResponse } from './listener.ts';
import { countRequestBytes } from './request-bytes.ts';
import type { ErrorReply, ForwardOutcome, UpstreamTarget } from './upstream-call.ts';

export interface CallTelemetry {
  readonly clock: Clock;
  readonly metrics: SidecarMetrics;
  readonly accessLog: AccessLog;
  readonly tracing: Tracing;
  /** Per-call counters and the duration histogram; off only to measure their cost (`telemetry.metrics.requests`). */
  readonly requestMetrics: boolean;
}

/**
 * One call's telemetry from its request head to its end. Lives beside the
 * CallContext rather than in it: filters see annotations, never spans.
 */
export interface CallRecording {
  /** Undefined when tracing is off. A server span inbound, a client span outbound. */
  readonly span: Span | undefined;
  /** `destination_service` label value: bounded, so an outbound call to an unregistered name is `unknown`. */
  readonly destinationLabel: string;
  /** Request body bytes received so far. */
  readonly bytesIn: () => number;
}

/** Label value of outbound calls to destinations that are not in the registry (the app chooses those names). */
export const UNKNOWN_DESTINATION = 'unknown';

/**
 * Starts a call's telemetry: the span (its parent is the caller's trace
 * context, W3C or B3) and the request byte count. Never throws.
 */
export function beginCall(t: CallTelemetry, call: CallContext, req: DownstreamRequest, destinationLabel: string): CallRecording {
  let bytesIn: () => number = zero;
  let span: Span | undefined;
  try {
    bytesIn = countRequestBytes(req);
    if (t.tracing.tracer) {
      const inbound = call.direction === 'inbound';
      span = t.tracing.startCallSpan(inbound ? call.method : `${call.method} ${destinationLabel}`, inbound ? SpanKind.SERVER : SpanKind.CLIENT, call.headers);
      // The samplers here never read attributes: an unsampled call (most, at low ratios) builds none.
      if (span?.isRecording()) span.setAttributes(startAttributes(call, inbound));
    }
  } catch {
    // Telemetry never fails a call (STYLE.md #8).
  }
  return { span, destinationLabel, bytesIn };
}

/** Makes the call's span the parent of the next hop (W3C headers out). */
export function propagateTrace(t: CallTelemetry, rec: CallRecording, headers: Record<string, string | string[]>): void {
  if (!rec.span) return;
  try {
    t.tracing.inject(rec.span, headers);
  } catch {
    // The call goes on without trace context.
  }
}

/**
 * Records each upstream attempt as an event on the call's span (endpoint,
 * outcome, resend count). Every attempt carries the same traceparent, so a
 * retried call shows as sibling server spans under one client span, with the
 * events telling which endpoint failed how.
 */
export function observeAttempt(rec: CallRecording, target: UpstreamTarget | undefined, attempt: number): UpstreamTarget | undefined {
  const span = rec.span;
  if (!target || !span || !span.isRecording()) return target;
  return {
    dispatcher: target.dispatcher,
    label: target.label,
    done(result) {
      try {
        span.addEvent('upstream_attempt', {
          'server.address': target.label,
          'http.request.resend_count': attempt,
          ...(result.kind === 'response' ? { 'http.response.status_code': result.status } : { 'error.type': result.failure }),
        });
      } catch {
        // Never in the way of the cluster's own bookkeeping below.
      }
      target.done(result);
    },
  };
}

/**
 * Ends a call: what a filter holds for it goes back (CallAnnotations.onCallEnd,
 * e.g. a concurrency slot), then its telemetry: metrics, span, access log.
 * Every call ends here exactly once, whatever ended it (a refusal, a cached
 * answer, the forward's end, an upstream error, the caller leaving, a timeout).
 * Never throws into the data path (STYLE.md #8).
 */
export function recordCall(t: CallTelemetry, call: CallContext, outcome: Pick<ForwardOutcome, 'status' | 'reason' | 'bytesOut'>, rec: CallRecording): void {
  call.annotations.onCallEnd?.();
  try {
    const durationMs = t.clock.monotonic() - call.startedAt;
    const destination = rec.destinationLabel;
    if (t.requestMetrics) {
      t.metrics.calls.record(call.direction, call.source.principal ?? '', destination, outcome.status, outcome.reason ?? '', durationMs / 1000);
      if (call.annotations.retries > 0) t.metrics.upstreamRetries.inc({ destination_service: destination }, call.annotations.retries);
    }
    const span = rec.span;
    const spanContext = span?.spanContext();
    if (span) endSpan(span, call, outcome);
    t.accessLog(call, {
      status: outcome.status,
      reason: outcome.reason,
      durationMs,
      bytesIn: rec.bytesIn(),
      bytesOut: outcome.bytesOut,
      traceId: spanContext?.traceId,
      spanId: spanContext?.spanId,
    });
  } catch {
    // A broken metric, span or log sink must not fail the call.
  }
}

/** meshgate answers the call itself (a filter's deny, no route): the reply, the call's decision, its telemetry. */
export function replyDenied(t: CallTelemetry, call: CallContext, res: DownstreamResponse, verdict: RespondVerdict, rec: CallRecording): void {
  call.annotations.decision = 'deny';
  call.annotations.rule = verdict.rule;
  sendVerdict(res, verdict, { grpc: call.isGrpc, requestId: call.id });
  recordCall(t, call, { status: res.statusCode, reason: verdict.code, bytesOut: 0 }, rec);
}

/** How forward() answers a call it could not complete (no endpoint, upstream timeout or reset); recordCall then logs and counts its outcome. */
export function replyError(call: CallContext, res: DownstreamResponse): ErrorReply {
  return (code, reason) => sendVerdict(res, respond(code, reason), { grpc: call.isGrpc, requestId: call.id });
}

/** A request whose target cannot be read (or whose path is refused) never becomes a call: 400, counted and logged, connection kept. */
export function rejectMalformed(direction: Direction, req: DownstreamRequest, res: DownstreamResponse, refusal: TargetRefusal, t: CallTelemetry): void {
  const given = req.headers['x-request-id'];
  const requestId = typeof given === 'string' && given.length <= 128 ? given : 'none';
  sendVerdict(res, respond(refusal.code, refusal.reason), { grpc: false, requestId });
  recordRejection(t, direction, requestRejection(req, refusal.code, requestId));
}

const METHOD_TOKEN = /^[A-Z][A-Z0-9-]{0,31}$/;

/**
 * A request refused by the codec or the listener (unparseable, its head too
 * late or too large): counted in requests_total and access-logged like a call,
 * with `-` for what was never read or must not be echoed (authority, path).
 */
export function recordRejection(t: CallTelemetry, direction: Direction, r: Rejection): void {
  try {
    const status = reasonCode(r.code).http;
    if (t.requestMetrics) t.metrics.calls.count(direction, '', '', status, r.code);
    const call: CallContext = {
      id: r.requestId ?? 'none',
      direction,
      startedAt: t.clock.monotonic(),
      method: r.method !== undefined && METHOD_TOKEN.test(r.method) ? r.method : '-',
      path: '-',
      query: '',
      authority: '-',
      headers: {},
      httpVersion: r.protocol,
      isGrpc: false,
      source: { address: r.address, port: r.port, principal: undefined },
      destination: { service: '', namespace: '' },
      annotations: { retries: 0 },
    };
    t.accessLog(call, { status, reason: r.code, durationMs: 0, bytesIn: 0, bytesOut: 0 });
  } catch {
    // Telemetry never fails the listener.
  }
}

function zero(): number {
  return 0;
}

/**
 * OTel HTTP semantic conventions (stable, v1.23+) plus meshgate's own. The
 * query string is left out (tokens travel there), and no header but the user
 * agent is read.
 */
function startAttributes(call: CallContext, inbound: boolean): Attributes {
  const { host, port } = splitAuthority(call.authority);
  const attributes: Attributes = {
    'http.request.method': call.method,
    'url.path': call.path,
    'url.scheme': 'http',
    'server.address': host,
    'network.protocol.name': 'http',
    'network.protocol.version': call.httpVersion,
    'meshgate.request_id': call.id,
    'meshgate.destination.service': `${call.destination.service}.${call.destination.namespace}`,
  };
  if (port !== undefined) attributes['server.port'] = port;
  const agent = call.headers['user-agent'];
  if (typeof agent === 'string') attributes['user_agent.original'] = agent;
  if (inbound) {
    attributes['client.address'] = call.source.address;
    attributes['network.peer.address'] = call.source.address;
    attributes['network.peer.port'] = call.source.port;
    if (call.source.principal) attributes['meshgate.source.principal'] = call.source.principal;
  } else {
    attributes['url.full'] = `http://${call.authority}${call.path}`;
  }
  if (call.isGrpc) {
    attributes['rpc.system'] = 'grpc';
    const slash = call.path.lastIndexOf('/');
    if (slash > 0) {
      attributes['rpc.service'] = call.path.slice(1, slash);
      attributes['rpc.method'] = call.path.slice(slash + 1);
    }
  }
  return attributes;
}

function endSpan(span: Span, call: CallContext, outcome: Pick<ForwardOutcome, 'status' | 'reason' | 'bytesOut'>): void {
  if (!span.isRecording()) {
    span.end();
    return;
  }
  const a = call.annotations;
  const attributes: Attributes = { 'http.response.status_code': outcome.status };
  if (a.decision) attributes['meshgate.decision'] = a.decision;
  if (a.rule) attributes['meshgate.decision.rule'] = a.rule;
  if (a.decisionId) attributes['meshgate.decision.id'] = a.decisionId;
  if (a.rateLimit) attributes['meshgate.ratelimit'] = a.rateLimit;
  if (a.version) attributes['meshgate.version'] = a.version;
  if (outcome.reason) attributes['meshgate.reason'] = outcome.reason;
  if (a.route) attributes['meshgate.route'] = a.route;
  if (a.upstream) attributes['meshgate.upstream'] = a.upstream;
  if (a.retries > 0) attributes['http.request.resend_count'] = a.retries;
  if (call.direction === 'outbound' && call.source.principal) attributes['meshgate.source.principal'] = call.source.principal;
  // Semantic conventions: a server span fails on 5xx only (a 4xx is the caller's error); a client span on any 4xx/5xx.
  let failed = outcome.status >= 500 || (call.direction === 'outbound' && outcome.status >= 400);
  if (call.isGrpc && outcome.reason) {
    // meshgate's own gRPC replies are HTTP 200 with a grpc-status; the upstream's statuses travel in trailers it relays unread.
    const code = reasonCode(outcome.reason).grpc;
    attributes['rpc.grpc.status_code'] = code;
    failed = call.direction === 'outbound' ? code !== 0 : GRPC_SERVER_ERRORS.has(code);
  }
  if (failed) {
    attributes['error.type'] = outcome.reason ?? String(outcome.status);
    span.setStatus({ code: SpanStatusCode.ERROR, ...(outcome.reason ? { message: outcome.reason } : {}) });
  }
  span.setAttributes(attributes);
  span.end();
}

/** gRPC codes that make a server span an error (semantic conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);

function splitAuthority(authority: string): { host: string; port: number | undefined } {
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(authority);
  if (!match) return { host: authority, port: undefined };
  return { host: match[1]!, port: match[2] === undefined ? undefined : Number(match[2]) };
}
