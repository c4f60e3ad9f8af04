import { z } from 'zod';
import { duration } from './durations.ts';

/*
 * The `telemetry:` section every role shares (sidecar, CA, policy server), and
 * its resolution against the standard OpenTelemetry environment variables.
 *
 * The file is checked for shape when it loads (an unknown field or a wrong
 * type is a start-up error, like anywhere else). Its values are checked here,
 * when the role starts: a bad telemetry value must never keep a proxy from
 * serving, so it falls back to a safe default and is reported once (STYLE.md,
 * "pino and OpenTelemetry JS"). The environment is read by the CLI and handed
 * in; nothing below reads `process.env`.
 */

const TRACING_EXPORTERS = ['otlp-grpc', 'otlp-http', 'none'] as const;
type TracingExporter = (typeof TRACING_EXPORTERS)[number];

export const tracingConfigSchema = z.strictObject({
  exporter: z
    .enum(TRACING_EXPORTERS)
    .optional()
    .describe(
      'otlp-grpc (OTLP over gRPC, port 4317), otlp-http (OTLP protobuf over HTTP, port 4318) or none. Default: from OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_PROTOCOL; otlp-http when only an endpoint is set (here or in OTEL_EXPORTER_OTLP_ENDPOINT); none otherwise.',
    ),
  endpoint: z
    .string()
    .optional()
    .describe(
      'Collector URL, e.g. http://jaeger:4317 (gRPC) or http://jaeger:4318 (HTTP; /v1/traces is added when the URL has no path). Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, then localhost. A URL that does not parse turns export off, with one warning.',
    ),
  headers: z
    .record(z.string(), z.string())
    .optional()
    .describe('Headers (gRPC metadata) sent with every export, e.g. a collector API key. Never logged nor shown in /config_dump. Default: OTEL_EXPORTER_OTLP_HEADERS.'),
  timeout: duration.optional().describe('Deadline of one export. Default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s.'),
  compression: z.enum(['gzip', 'none']).optional().describe('Export compression. Default: OTEL_EXPORTER_OTLP_COMPRESSION, else none.'),
  samplingRatio: z
    .number()
    .optional()
    .describe(
      "Share of new traces sampled, 0 to 1; a call that arrives with a trace context follows its caller's decision (parent-based). Default: OTEL_TRACES_SAMPLER_ARG for a traceidratio sampler, else 1. Out of range: 1, with one warning.",
    ),
  serviceName: z.string().optional().describe("`service.name` of the spans. Default: OTEL_SERVICE_NAME, else the role's own (the sidecar: `<service>.<namespace>`)."),
  batch: z
    .strictObject({
      maxQueueSize: z.number().optional().describe('Spans waiting for export; beyond it new spans are dropped and counted. Default 2048 (OTEL_BSP_MAX_QUEUE_SIZE).'),
      maxExportBatchSize: z.number().optional().describe('Spans per export request; at most maxQueueSize. Default 512 (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).'),
      scheduledDelay: duration.optional().describe('Longest wait before a partial batch is sent. Default 5s (OTEL_BSP_SCHEDULE_DELAY).'),
    })
    .prefault({})
    .describe('Batching: spans leave in the background, never on the path of a call.'),
});

export type TracingConfig = z.output<typeof tracingConfigSchema>;

/** `log.level` of every role. */
export const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Log level.');

/** The `log:` section of the CA and the policy server (the sidecar's adds its access log). */
export const roleLogSchema = z.strictObject({ level: logLevelSchema }).prefault({}).describe('Logging.');

/** The `telemetry:` section of the CA and the policy server: traces only. */
export const roleTelemetrySchema = z
  .strictObject({
    tracing: tracingConfigSchema.prefault({}).describe('OpenTelemetry traces, exported over OTLP.'),
  })
  .prefault({})
  .describe('Telemetry: traces (metrics are on the admin listener, logs on stdout).');

/** Tracing as the SDK gets it: every value checked and defaulted. */
export interface TracingSettings {
  readonly exporter: TracingExporter;
  readonly endpoint: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly compression: 'gzip' | 'none';
  readonly samplingRatio: number;
  readonly serviceName: string;
  /** From OTEL_RESOURCE_ATTRIBUTES, below the role's own attributes. */
  readonly resourceAttributes: Readonly<Record<string, string>>;
  readonly batch: { readonly maxQueueSize: number; readonly maxExportBatchSize: number; readonly scheduledDelayMs: number };
}

export interface ResolvedTracing {
  readonly settings: TracingSettings;
  /** One line per value that fell back to a default; the role logs each once, at start. */
  readonly warnings: readonly string[];
}

export const TRACING_OFF_SETTINGS: TracingSettings = Object.freeze({
  exporter: 'none',
  endpoint: '',
  headers: Object.freeze({}),
  timeoutMs: 10_000,
  compression: 'none',
  samplingRatio: 1,
  serviceName: 'meshgate',
  resourceAttributes: Object.freeze({}),
  batch: Object.freeze({ maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 5_000 }),
});

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The effective tracing settings: the file first, then the standard
 * OTEL_* variables in `env`, then defaults. Never throws.
 */
export function resolveTracingSettings(file: TracingConfig | undefined, env: Env, defaults: { serviceName: string }): ResolvedTracing {
  const warnings: string[] = [];
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  const signal = (name: string): { name: string; value: string } | undefined => {
    const specific = `OTEL_EXPORTER_OTLP_TRACES_${name}`;
    const general = `OTEL_EXPORTER_OTLP_${name}`;
    const value = read(specific);
    if (value !== undefined) return { name: specific, value };
    const fallback = read(general);
    return fallback === undefined ? undefined : { name: general, value: fallback };
  };

  const exporter = resolveExporter(file, read, signal, warnings);
  const base = { ...TRACING_OFF_SETTINGS, serviceName: file?.serviceName ?? read('OTEL_SERVICE_NAME') ?? defaults.serviceName };
  const samplingRatio = resolveRatio(file, read, warnings);
  const resourceAttributes = parsePairs(read('OTEL_RESOURCE_ATTRIBUTES'), 'OTEL_RESOURCE_ATTRIBUTES', warnings);
  if (exporter === 'none') return { settings: Object.freeze({ ...base, samplingRatio, resourceAttributes }), warnings };

  const endpoint = resolveEndpoint(exporter, file?.endpoint, signal('ENDPOINT'), warnings);
  if (endpoint === undefined) return { settings: Object.freeze({ ...base, samplingRatio, resourceAttributes }), warnings };

  const headers = file?.headers ?? {
    ...parsePairs(read('OTEL_EXPORTER_OTLP_HEADERS'), 'OTEL_EXPORTER_OTLP_HEADERS', warnings),
    ...parsePairs(read('OTEL_EXPORTER_OTLP_TRACES_HEADERS'), 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', warnings),
  };
  const timeoutMs = positive(file?.timeout, 'telemetry.tracing.timeout', undefined, warnings) ?? positiveEnv(signal('TIMEOUT'), warnings) ?? 10_000;
  const compressionEnv = signal('COMPRESSION');
  let compression: 'gzip' | 'none' = file?.compression ?? 'none';
  if (!file?.compression && compressionEnv) {
    if (compressionEnv.value === 'gzip' || compressionEnv.value === 'none') compression = compressionEnv.value;
    else warnings.push(`${compressionEnv.name}: expected gzip or none, got ${quote(compressionEnv.value)}; using none`);
  }
  const maxQueueSize = positive(file?.batch.maxQueueSize, 'telemetry.tracing.batch.maxQueueSize', true, warnings) ?? positiveEnv(named(read, 'OTEL_BSP_MAX_QUEUE_SIZE'), warnings, true) ?? 2048;
  let maxExportBatchSize =
    positive(file?.batch.maxExportBatchSize, 'telemetry.tracing.batch.maxExportBatchSize', true, warnings) ??
    positiveEnv(named(read, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE'), warnings, true) ??
    Math.min(512, maxQueueSize);
  if (maxExportBatchSize > maxQueueSize) {
    warnings.push(`telemetry.tracing.batch.maxExportBatchSize: ${maxExportBatchSize} exceeds maxQueueSize ${maxQueueSize}; using ${maxQueueSize}`);
    maxExportBatchSize = maxQueueSize;
  }
  const scheduledDelayMs =
    positive(file?.batch.scheduledDelay, 'telemetry.tracing.batch.scheduledDelay', undefined, warnings) ?? positiveEnv(named(read, 'OTEL_BSP_SCHEDULE_DELAY'), warnings) ?? 5_000;
  return {
    settings: Object.freeze({
      exporter,
      endpoint,
      headers: Object.freeze({ ...headers }),
      timeoutMs,
      compression,
      samplingRatio,
      serviceName: base.serviceName,
      resourceAttributes,
      batch: Object.freeze({ maxQueueSize, maxExportBatchSize, scheduledDelayMs }),
    }),
    warnings,
  };
}

/** What `/config_dump` may show of the tracing settings: never the export headers (they may hold a key). */
export function describeTracingSettings(settings: TracingSettings): Record<string, unknown> {
  const { headers, ...rest } = settings;
  return { ...rest, headers: Object.keys(headers).map((name) => `${name}: [redacted]`) };
}

function resolveExporter(
  file: TracingConfig | undefined,
  read: (name: string) => string | undefined,
  signal: (name: string) => { name: string; value: string } | undefined,
  warnings: string[],
): TracingExporter {
  if (file?.exporter) return file.exporter;
  const disabled = read('OTEL_SDK_DISABLED');
  if (disabled?.toLowerCase() === 'true') return 'none';
  const protocol = signal('PROTOCOL');
  const otlp = (): TracingExporter => {
    if (!protocol || protocol.value === 'http/protobuf') return 'otlp-http';
    if (protocol.value === 'grpc') return 'otlp-grpc';
    warnings.push(`${protocol.name}: expected grpc or http/protobuf, got ${quote(protocol.value)}; using http/protobuf`);
    return 'otlp-http';
  };
  const named = read('OTEL_TRACES_EXPORTER');
  if (named !== undefined) {
    const first = named.split(',')[0]!.trim();
    if (first === 'none') return 'none';
    if (first === 'otlp') return otlp();
    warnings.push(`OTEL_TRACES_EXPORTER: meshgate exports over OTLP only, got ${quote(named)}; tracing is off`);
    return 'none';
  }
  // An endpoint or a protocol anywhere means the operator wants traces.
  if (file?.endpoint !== undefined || signal('ENDPOINT') !== undefined || protocol !== undefined) return otlp();
  return 'none';
}

function resolveEndpoint(exporter: 'otlp-grpc' | 'otlp-http', fromFile: string | undefined, fromEnv: { name: string; value: string } | undefined, warnings: string[]): string | undefined {
  const field = fromFile !== undefined ? 'telemetry.tracing.endpoint' : fromEnv?.name;
  const raw = fromFile ?? fromEnv?.value ?? (exporter === 'otlp-grpc' ? 'http://localhost:4317' : 'http://localhost:4318');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    warnings.push(`${field}: not a URL (${quote(raw)}); tracing export is off`);
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    warnings.push(`${field}: expected an http:// or https:// URL, got ${quote(raw)}; tracing export is off`);
    return undefined;
  }
  if (exporter === 'otlp-grpc') return `${url.protocol}//${url.host}`;
  // OTLP spec: the signal-specific variable is used as given, the general one is a base URL.
  if (fromFile === undefined && fromEnv?.name === 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') return url.href;
  if (fromFile === undefined && fromEnv !== undefined) return `${url.href.replace(/\/$/, '')}/v1/traces`;
  // In the file (and by default) a URL without a path means the collector's standard one.
  return url.pathname === '/' ? `${url.origin}/v1/traces` : url.href;
}

function resolveRatio(file: TracingConfig | undefined, read: (name: string) => string | undefined, warnings: string[]): number {
  if (file?.samplingRatio !== undefined) {
    const ratio = file.samplingRatio;
    if (Number.isFinite(ratio) && ratio >= 0 && ratio <= 1) return ratio;
    warnings.push(`telemetry.tracing.samplingRatio: expected a number from 0 to 1, got ${ratio}; using 1`);
    return 1;
  }
  const sampler = read('OTEL_TRACES_SAMPLER');
  if (sampler === undefined) return 1;
  switch (sampler) {
    case 'always_on':
    case 'parentbased_always_on':
      return 1;
    case 'always_off':
    case 'parentbased_always_off':
      return 0;
    case 'traceidratio':
    case 'parentbased_traceidratio': {
      const arg = read('OTEL_TRACES_SAMPLER_ARG');
      const ratio = arg === undefined ? 1 : Number(arg);
      if (Number.isFinite(ratio) && ratio >= 0 && ratio <= 1) return ratio;
      warnings.push(`OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got ${quote(arg ?? '')}; using 1`);
      return 1;
    }
    default:
      warnings.push(`OTEL_TRACES_SAMPLER: expected parentbased_traceidratio, traceidratio, always_on or always_off, got ${quote(sampler)}; sampling everything`);
      return 1;
  }
}

function named(read: (name: string) => string | undefined, name: string): { name: string; value: string } | undefined {
  const value = read(name);
  return value === undefined ? undefined : { name, value };
}

/** A file value that must be a positive (integer, when asked) number; undefined when absent or bad. */
function positive(value: number | undefined, field: string, integer: true | undefined, warnings: string[]): number | undefined {
  if (value === undefined) return undefined;
  if (Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value))) return value;
  warnings.push(`${field}: expected a positive ${integer ? 'integer' : 'value'}, got ${value}; using the default`);
  return undefined;
}

function positiveEnv(entry: { name: string; value: string } | undefined, warnings: string[], integer?: true): number | undefined {
  if (!entry) return undefined;
  const value = Number(entry.value);
  if (Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value))) return value;
  warnings.push(`${entry.name}: expected a positive ${integer ? 'integer' : 'number of milliseconds'}, got ${quote(entry.value)}; using the default`);
  return undefined;
}

/** `k=v,k2=v2` with percent-encoded values (W3C Baggage syntax, as the OTel spec uses for these variables). */
function parsePairs(text: string | undefined, name: string, warnings: string[]): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  if (text === undefined) return out;
  let bad = 0;
  for (const entry of text.split(',')) {
    const eq = entry.indexOf('=');
    const key = eq < 0 ? '' : entry.slice(0, eq).trim();
    if (key === '') {
      if (entry.trim() !== '') bad++;
      continue;
    }
    try {
      out[key] = decodeURIComponent(entry.slice(eq + 1).trim());
    } catch {
      bad++;
    }
  }
  // The values may be secrets (API keys): name the variable, never echo it.
  if (bad > 0) warnings.push(`${name}: ${bad} entr${bad === 1 ? 'y is' : 'ies are'} not key=value and ${bad === 1 ? 'was' : 'were'} ignored`);
  return out;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}
