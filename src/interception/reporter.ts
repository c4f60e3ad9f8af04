import type { Clock } from '../core/clock.ts';
import { createLogGate } from '../core/log-gate.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import type { OriginalDestination } from './original-dst.ts';

/*
 * Every passthrough and every refusal of captured traffic is counted; each
 * kind is logged at most once per interval (with how many were held back),
 * so an app that floods an external API or a closed port does not flood the
 * log. Reasons are a fixed set: they are metric labels.
 */

/** unregistered_host: HTTP to a host the registry does not know; not_http: the client spoke first, not HTTP; server_first: it stayed silent. */
type PassthroughReason = 'unregistered_host' | 'not_http' | 'server_first';
/** not_app_port (inbound); registry_only, loop, connect_failed (outbound). */
type RefusalReason = 'not_app_port' | 'registry_only' | 'loop' | 'connect_failed';

export interface InterceptionReporter {
  passthrough(reason: PassthroughReason, dst: OriginalDestination): void;
  refused(direction: 'inbound' | 'outbound', reason: RefusalReason, dst: OriginalDestination, detail: string): void;
}

const LOG_INTERVAL_MS = 10_000;

export function createInterceptionReporter(deps: { metrics: SidecarMetrics; logger: Logger; clock: Clock }): InterceptionReporter {
  const gate = createLogGate(deps.clock, LOG_INTERVAL_MS);
  const log = deps.logger.child({ component: 'interception' });
  return {
    passthrough(reason, dst) {
      deps.metrics.outboundPassthrough.inc({ reason });
      const heldBack = gate.pass(`passthrough:${reason}`);
      if (heldBack !== undefined) log.info({ reason, destination: `${dst.address}:${dst.port}`, heldBack }, 'captured outbound traffic passed through to its original destination');
    },
    refused(direction, reason, dst, detail) {
      deps.metrics.interceptionRefusals.inc({ direction, reason });
      const heldBack = gate.pass(`refused:${direction}:${reason}`);
      if (heldBack !== undefined) log.warn({ direction, reason, destination: `${dst.address}:${dst.port}`, detail, heldBack }, 'captured traffic refused');
    },
  };
}
