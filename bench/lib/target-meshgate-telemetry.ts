import type { Target } from './target.ts';
import { startMeshgateSidecar } from './target-meshgate.ts';

/*
 * bench:telemetry rows: the same sidecar path (outbound -> inbound of one
 * sidecar -> upstream, so every request makes a client span, a server span,
 * two access log lines and two sets of metric updates), with each kind of
 * telemetry on or off. Only the `telemetry` and `log` sections differ.
 */

export interface TelemetryMix {
  readonly metrics: boolean;
  readonly accessLog: boolean;
  /** Share of new traces sampled; undefined: tracing off. */
  readonly tracing: number | undefined;
  /** Share of successful calls logged. */
  readonly logSampling?: number;
}

export function createTelemetryTarget(id: string, label: string, mix: TelemetryMix, sinkUrl: () => string): Target {
  return {
    id,
    label,
    start: (context) =>
      startMeshgateSidecar(context, 'outbound', {
        // Access log lines go to stdout, which the harness reads (as a container runtime would).
        log: { level: 'warn', accessLog: mix.accessLog, accessLogSampling: mix.logSampling ?? 1 },
        telemetry: {
          metrics: { requests: mix.metrics },
          tracing: mix.tracing === undefined ? { exporter: 'none' } : { exporter: 'otlp-http', endpoint: sinkUrl(), samplingRatio: mix.tracing, batch: { scheduledDelay: '1s' } },
        },
      }),
  };
}
