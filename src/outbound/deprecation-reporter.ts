import type { Counter } from 'prom-client';
import type { Clock } from '../core/clock.ts';
import { createLogGate } from '../core/log-gate.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ServiceVersion } from './versions.ts';

/** At most one log line per (destination, version) per interval: owners need to know who calls, not every call. */
export const DEPRECATION_LOG_INTERVAL_MS = 60_000;

/** Counts and logs calls that reached a deprecated version; one per sidecar, shared by every registry update. */
export interface DeprecationReporter {
  /** @param destination `name.namespace` from the registry */
  report(destination: string, version: ServiceVersion): void;
}

export function createDeprecationReporter(deps: {
  /** The workload this sidecar serves: on the outbound side it is the caller. */
  readonly caller: { readonly service: string; readonly namespace: string };
  readonly counter: Counter<'destination_service' | 'version'>;
  readonly clock: Clock;
  readonly logger: Logger;
}): DeprecationReporter {
  const caller = `${deps.caller.service}.${deps.caller.namespace}`;
  // Keys are (destination, version) pairs from policy documents and the registry, so the gate is bounded by the policy.
  const gate = createLogGate(deps.clock, DEPRECATION_LOG_INTERVAL_MS);
  return {
    report(destination, version) {
      const deprecation = version.deprecation;
      if (!deprecation) return;
      deps.counter.inc({ destination_service: destination, version: version.name });
      const heldBack = gate.pass(`${destination}\u0000${version.name}`);
      if (heldBack === undefined) return;
      const fields = {
        caller,
        destination,
        version: version.name,
        sunset: new Date(deprecation.sunsetMs).toISOString(),
        calls: heldBack + 1, // since the last line: how often this caller still calls
        message: deprecation.message,
      };
      // meshgate never breaks traffic on a date: past the sunset the call still works, the log gets louder.
      if (deps.clock.now() >= deprecation.sunsetMs) deps.logger.warn(fields, 'call to a version past its sunset date');
      else deps.logger.info(fields, 'call to a deprecated version');
    },
  };
}
