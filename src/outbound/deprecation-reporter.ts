import type { Counter } from 'prom-client';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ServiceVersion } from './versions.ts';

/** At most one log line per (destination, version) per interval: owners need to know who calls, not every call. */
export const DEPRECATION_LOG_INTERVAL_MS = 60_000;

/** Counts and logs calls that reached a deprecated version; one per sidecar, shared by every registry update. */
export interface DeprecationReporter {
  /** @param destination `name.namespace` from the registry */
  report(destination: string, version: ServiceVersion): void;
}

interface LogState {
  lastLoggedAt: number;
  /** Calls since the last line, so the line says how often this caller still calls. */
  calls: number;
}

export function createDeprecationReporter(deps: {
  /** The workload this sidecar serves: on the outbound side it is the caller. */
  readonly caller: { readonly service: string; readonly namespace: string };
  readonly counter: Counter<'destination_service' | 'version'>;
  readonly clock: Clock;
  readonly logger: Logger;
}): DeprecationReporter {
  const caller = `${deps.caller.service}.${deps.caller.namespace}`;
  // Keys are (destination, version) pairs from policy documents and the registry, so the map is bounded by the policy.
  const states = new Map<string, LogState>();
  return {
    report(destination, version) {
      const deprecation = version.deprecation;
      if (!deprecation) return;
      deps.counter.inc({ destination_service: destination, version: version.name });
      const key = `${destination}\u0000${version.name}`;
      const now = deps.clock.monotonic();
      let state = states.get(key);
      if (!state) {
        state = { lastLoggedAt: Number.NEGATIVE_INFINITY, calls: 0 };
        states.set(key, state);
      }
      state.calls++;
      if (now - state.lastLoggedAt < DEPRECATION_LOG_INTERVAL_MS) return;
      const fields = {
        caller,
        destination,
        version: version.name,
        sunset: new Date(deprecation.sunsetMs).toISOString(),
        calls: state.calls,
        message: deprecation.message,
      };
      state.lastLoggedAt = now;
      state.calls = 0;
      // meshgate never breaks traffic on a date: past the sunset the call still works, the log gets louder.
      if (deps.clock.now() >= deprecation.sunsetMs) deps.logger.warn(fields, 'call to a version past its sunset date');
      else deps.logger.info(fields, 'call to a deprecated version');
    },
  };
}
