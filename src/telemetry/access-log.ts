import type { CallContext } from '../core/call-context.ts';
import type { Logger } from './logger.ts';

export interface CallOutcome {
  readonly status: number;
  /** meshgate reason code when meshgate answered instead of the upstream. */
  readonly reason: string | undefined;
  readonly durationMs: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/**
 * One JSON line per call. Fields are picked one by one: headers are never
 * dumped, so an Authorization header, a cookie or a token cannot leak here.
 */
export function createAccessLog(logger: Logger, enabled: boolean): (call: CallContext, outcome: CallOutcome) => void {
  if (!enabled) return () => {};
  const log = logger.child({ log: 'access' });
  return (call, outcome) => {
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
      destination_service: `${call.destination.service}.${call.destination.namespace}`,
      user_agent: call.headers['user-agent'],
      request_id: call.id,
      decision: call.annotations.decision,
      rule: call.annotations.rule,
      route: call.annotations.route,
      upstream: call.annotations.upstream,
      retries: call.annotations.retries,
    });
  };
}
