import { ROOT_CONTEXT } from '@opentelemetry/api';
import type { TracingConfig, TracingSettings } from '../config/telemetry-schema.ts';
import { resolveTracingSettings } from '../config/telemetry-schema.ts';
import type { Tracing, TracingDeps, TracingStats } from './tracing-types.ts';

export type { HeaderCarrier, Tracing, TracingDeps } from './tracing-types.ts';

const NO_STATS: TracingStats = Object.freeze({ exportedSpans: 0, failedSpans: 0, droppedSpans: 0 });

/** Tracing off: no provider, no exporter, headers pass through untouched. */
export function tracingOff(settings: TracingSettings): Tracing {
  return {
    tracer: undefined,
    settings,
    extract: () => ROOT_CONTEXT,
    startCallSpan: () => undefined,
    inject: () => {},
    stats: () => NO_STATS,
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/** Tracing off for a role run without the CLI (the demo, benchmarks): no exporter, headers untouched. */
export function noTracing(serviceName: string): Tracing {
  return tracingOff(resolveTracingSettings(undefined, {}, { serviceName }).settings);
}

/**
 * Starts a role's tracing. Never throws: an exporter that cannot be built
 * turns tracing off with one warning, and export failures are logged once
 * until an export succeeds again (each failed span is counted).
 */
export async function createTracing(settings: TracingSettings, deps: TracingDeps): Promise<Tracing> {
  if (settings.exporter === 'none' && !deps.exporter) return tracingOff(settings);
  const { createSdkTracing } = await import('./tracing-sdk.ts');
  return (await createSdkTracing(settings, deps)) ?? tracingOff(settings);
}

/** Who a role's spans come from: the default `service.name` and the role's resource attributes. */
export interface TracingIdentity {
  readonly serviceName: string;
  readonly resource: Readonly<Record<string, string>>;
}

/**
 * A role's tracing from its `telemetry.tracing` section and the environment
 * the CLI read: resolves the settings, reports each value that fell back to a
 * default once, and starts the SDK. Never throws.
 */
export async function startTracing(section: TracingConfig | undefined, env: Readonly<Record<string, string | undefined>>, deps: TracingDeps & { readonly serviceName: string }): Promise<Tracing> {
  const { settings, warnings } = resolveTracingSettings(section, env, { serviceName: deps.serviceName });
  for (const warning of warnings) deps.logger.warn({ component: 'tracing' }, `bad telemetry setting: ${warning}`);
  const tracing = await createTracing(settings, deps);
  if (tracing.tracer) {
    deps.logger.info({ component: 'tracing', exporter: settings.exporter, endpoint: settings.endpoint, samplingRatio: settings.samplingRatio, serviceName: settings.serviceName }, 'tracing on');
  }
  return tracing;
}
