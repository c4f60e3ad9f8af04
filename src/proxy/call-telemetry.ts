import type { CallContext, Direction } from '../core/call-context.ts';
import { respond } from '../core/verdict.ts';
import { sendVerdict } from '../errors/reply.ts';
import type { Clock } from '../core/clock.ts';
import type { CallOutcome } from '../telemetry/access-log.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import type { TargetRefusal } from './call.ts';
import type { ForwardOutcome } from './forward.ts';
import type { DownstreamRequest, DownstreamResponse } from './listener.ts';

export interface CallTelemetry {
  readonly clock: Clock;
  readonly metrics: SidecarMetrics;
  readonly accessLog: (call: CallContext, outcome: CallOutcome) => void;
}

/** Ends a call's telemetry. Telemetry never throws into the data path (STYLE.md #8). */
export function recordCall(t: CallTelemetry, call: CallContext, outcome: Pick<ForwardOutcome, 'status' | 'reason' | 'bytesOut'>): void {
  try {
    const durationMs = t.clock.monotonic() - call.startedAt;
    const destination = `${call.destination.service}.${call.destination.namespace}`;
    t.metrics.requestsTotal.inc({
      direction: call.direction,
      source_principal: call.source.principal ?? '',
      destination_service: destination,
      response_code: String(outcome.status),
      reason: outcome.reason ?? '',
    });
    t.metrics.requestDuration.observe({ direction: call.direction, destination_service: destination }, durationMs / 1000);
    if (call.annotations.retries > 0) t.metrics.upstreamRetries.inc({ destination_service: destination }, call.annotations.retries);
    t.accessLog(call, { status: outcome.status, reason: outcome.reason, durationMs, bytesIn: 0, bytesOut: outcome.bytesOut });
  } catch {
    // A broken metric or log sink must not fail the call.
  }
}

/** A request whose target cannot be read (or whose path is refused) never becomes a call: 400, counted, connection kept. */
export function rejectMalformed(direction: Direction, req: DownstreamRequest, res: DownstreamResponse, refusal: TargetRefusal, t: CallTelemetry): void {
  const given = req.headers['x-request-id'];
  const requestId = typeof given === 'string' && given.length <= 128 ? given : 'none';
  sendVerdict(res, respond(refusal.code, refusal.reason), { grpc: false, requestId });
  t.metrics.requestsTotal.inc({ direction, source_principal: '', destination_service: '', response_code: '400', reason: refusal.code });
}
