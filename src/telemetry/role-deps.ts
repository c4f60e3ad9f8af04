import type { Clock } from '../core/clock.ts';
import type { LogDrops, Logger } from './logger.ts';
import type { Tracing } from './tracing.ts';

/** What the CLI hands every role (sidecar, CA, policy server) when it runs one: its telemetry, its clock and where its config came from. */
export interface RoleDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Process-wide metrics (event loop, memory); off in tests that run several roles in one process. */
  readonly defaultMetrics?: boolean;
  /** Path of the config file, for error messages. */
  readonly configFile?: string;
  /** Relative paths in the config resolve against this (the config file's folder); default: the working directory. */
  readonly configDir?: string;
  /** Made by the CLI from `telemetry.tracing` and the OTEL_* environment; the caller flushes and shuts it down after the role stops. */
  readonly tracing: Tracing;
  /** Log lines this process dropped because stdout was not read (telemetry/logger.ts), for its metrics. */
  readonly logDrops?: LogDrops;
}
