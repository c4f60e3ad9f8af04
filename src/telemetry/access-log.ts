import type { CallContext } from '../core/call-context.ts';
import type { Random } from '../core/clock.ts';
import type { Logger } from './logger.ts';

export interface CallOutcome {
  readonly status: number;
  /** meshgate reason code when meshgate answered instead of the upstream. */
  readonly reason: string | undefined;
  readonly durationMs: number;
  /** Request body bytes received from the caller. */
  readonly bytesIn: number;
  /** Response body bytes sent to the caller. */
  readonly bytesOut: number;
  /** Trace of the call, when tracing is on. */
  readonly traceId?: string | undefined;
  readonly spanId?: string | undefined;
}

export type AccessLog = (call: CallContext, outcome: CallOutcome) => void;

export interface AccessLogOptions {
  readonly enabled: boolean;
  /** Share of successful calls logged, 0 to 1. Errors (status >= 400, or a meshgate reason) are always logged. */
  readonly sampling: number;
  readonly random: Random;
}

/**
 * One JSON line per call, on its own child logger: `log.level` governs the
 * process's own messages, `log.accessLog` and its sampling govern these.
 * Fields are picked one by one: headers are never dumped, so an
 * Authorization header, a cookie or a token cannot leak here, and the path
 * is logged without its query string (where tokens travel too).
 */
export function createAccessLog(logger: Logger, opts: AccessLogOptions): AccessLog {
  if (!opts.enabled) return () => {};
  // Its own level: an operator who quiets the process log to `warn` keeps the access log.
  // No redaction pass: the fields below are picked one by one and never hold a header map, a key or
  // a token, and the process logger's wildcard paths would cost ~40% of each line (npm run bench:telemetry).
  const log = logger.child({ log: 'access' }, { level: 'info', redact: [] });
  const sampling = Number.isFinite(opts.sampling) ? Math.min(1, Math.max(0, opts.sampling)) : 1;
  const random = opts.random;
  return (call, outcome) => {
    if (sampling < 1 && outcome.status < 400 && outcome.reason === undefined && random() >= sampling) return;
    const a = call.annotations;
    log.info({
      direction: call.direction,
      method: call.method,
      authority: call.authority,
      path: call.path,
      protocol: call.httpVersion === '2' ? 'HTTP/2' : 'HTTP/1.1',
      status: outcome.status,
      reason: outcome.reason,
      duration_ms: Math.round(outcome.durationMs * 1000) / 1000,
      bytes_in: outcome.bytesIn,
      bytes_out: outcome.bytesOut,
      source_address: call.source.address,
      source_principal: call.source.principal,
      destination_service: call.destination.service === '' ? undefined : `${call.destination.service}.${call.destination.namespace}`, // '' for requests refused before a destination was read
      user_agent: call.headers['user-agent'],
      request_id: call.id,
      trace_id: outcome.traceId,
      span_id: outcome.spanId,
      decision: a.decision,
      rule: a.rule,
      decision_id: a.decisionId,
      ratelimit: a.rateLimit,
      shadow_denials: a.shadowDenials,
      route: a.route,
      version: a.version,
      upstream: a.upstream,
      retries: a.retries,
      cache: a.cache, // hit, miss or bypass:<why> on calls a Route responses[].cache rule covers
    });
  };
}
