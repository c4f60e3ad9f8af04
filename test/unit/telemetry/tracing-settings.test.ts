import { describe, expect, it } from 'vitest';
import type { TracingConfig } from '../../../src/config/telemetry-schema.ts';
import { describeTracingSettings, resolveTracingSettings } from '../../../src/config/telemetry-schema.ts';

const section = (fields: Partial<TracingConfig> = {}): TracingConfig => ({ batch: {}, ...fields }) as TracingConfig;
const resolve = (file: Partial<TracingConfig> | undefined, env: Record<string, string> = {}) =>
  resolveTracingSettings(file === undefined ? undefined : section(file), env, { serviceName: 'orders.shop' });

describe('tracing settings: the file, then OTEL_* variables, then defaults', () => {
  it('is off when nothing asks for traces', () => {
    const { settings, warnings } = resolve({});
    expect(settings.exporter).toBe('none');
    expect(warnings).toEqual([]);
  });

  it('takes the file first', () => {
    const { settings } = resolve(
      { exporter: 'otlp-grpc', endpoint: 'http://jaeger:4317', samplingRatio: 0.25, serviceName: 'custom', timeout: 2_000, headers: { 'x-key': 'k' } },
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://other:4318', OTEL_SERVICE_NAME: 'env-name', OTEL_TRACES_SAMPLER: 'always_off' },
    );
    expect(settings).toMatchObject({ exporter: 'otlp-grpc', endpoint: 'http://jaeger:4317', samplingRatio: 0.25, serviceName: 'custom', timeoutMs: 2_000, headers: { 'x-key': 'k' } });
  });

  it('reads the standard variables when the file says nothing', () => {
    const { settings, warnings } = resolve(
      {},
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_HEADERS: 'api-key=secret%20value,tenant=a',
        OTEL_EXPORTER_OTLP_TIMEOUT: '3000',
        OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0.1',
        OTEL_SERVICE_NAME: 'from-env',
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod',
        OTEL_BSP_MAX_QUEUE_SIZE: '100',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '50',
        OTEL_BSP_SCHEDULE_DELAY: '250',
      },
    );
    expect(warnings).toEqual([]);
    expect(settings).toEqual({
      exporter: 'otlp-http',
      endpoint: 'http://collector:4318/v1/traces',
      headers: { 'api-key': 'secret value', tenant: 'a' },
      timeoutMs: 3000,
      compression: 'gzip',
      samplingRatio: 0.1,
      serviceName: 'from-env',
      resourceAttributes: { 'deployment.environment': 'prod' },
      batch: { maxQueueSize: 100, maxExportBatchSize: 50, scheduledDelayMs: 250 },
    });
  });

  it('chooses gRPC by OTEL_EXPORTER_OTLP_PROTOCOL and uses the signal-specific endpoint as given', () => {
    expect(resolve({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }).settings).toMatchObject({ exporter: 'otlp-grpc', endpoint: 'http://localhost:4317' });
    expect(resolve({}, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c.example:443/custom/path' }).settings).toMatchObject({
      exporter: 'otlp-http',
      endpoint: 'https://c.example/custom/path',
    });
    expect(resolve({ exporter: 'otlp-http', endpoint: 'http://jaeger:4318' }).settings.endpoint).toBe('http://jaeger:4318/v1/traces');
    expect(resolve({ exporter: 'otlp-http' }).settings.endpoint).toBe('http://localhost:4318/v1/traces');
  });

  it('honours OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none', () => {
    expect(resolve({}, { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).settings.exporter).toBe('none');
    expect(resolve({}, { OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).settings.exporter).toBe('none');
  });

  it.each([
    [{ samplingRatio: 2 }, {}, 'telemetry.tracing.samplingRatio: expected a number from 0 to 1, got 2; using 1', { samplingRatio: 1 }],
    [{}, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: 'half' }, 'OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "half"; using 1', { samplingRatio: 1 }],
    [
      {},
      { OTEL_TRACES_SAMPLER: 'jaeger_remote' },
      'OTEL_TRACES_SAMPLER: expected parentbased_traceidratio, traceidratio, always_on or always_off, got "jaeger_remote"; sampling everything',
      { samplingRatio: 1 },
    ],
    [{ exporter: 'otlp-http', endpoint: 'not a url' }, {}, 'telemetry.tracing.endpoint: not a URL ("not a url"); tracing export is off', { exporter: 'none' }],
    [{}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://c:21' }, 'OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// or https:// URL, got "ftp://c:21"; tracing export is off', { exporter: 'none' }],
    [{}, { OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER: meshgate exports over OTLP only, got "zipkin"; tracing is off', { exporter: 'none' }],
    [{}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, 'OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got "http/json"; using http/protobuf', { exporter: 'otlp-http' }],
    [
      { exporter: 'otlp-http', batch: { maxQueueSize: 10, maxExportBatchSize: 20 } },
      {},
      'telemetry.tracing.batch.maxExportBatchSize: 20 exceeds maxQueueSize 10; using 10',
      { batch: { maxQueueSize: 10, maxExportBatchSize: 10, scheduledDelayMs: 5000 } },
    ],
    [
      { exporter: 'otlp-http' },
      { OTEL_BSP_MAX_QUEUE_SIZE: '-5' },
      'OTEL_BSP_MAX_QUEUE_SIZE: expected a positive integer, got "-5"; using the default',
      { batch: { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 5000 } },
    ],
  ] as const)('a bad value falls back to a safe default and says so once: %j %j', (file, env, warning, expected) => {
    const { settings, warnings } = resolve(file as Partial<TracingConfig>, env as Record<string, string>);
    expect(warnings).toEqual([warning]);
    expect(settings).toMatchObject(expected);
  });

  it('never echoes header values, in warnings or in /config_dump', () => {
    const { settings, warnings } = resolve({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_HEADERS: 'api-key=TOPSECRET,garbage' });
    expect(warnings).toEqual(['OTEL_EXPORTER_OTLP_HEADERS: 1 entry is not key=value and was ignored']);
    expect(JSON.stringify(describeTracingSettings(settings))).not.toContain('TOPSECRET');
    expect(describeTracingSettings(settings).headers).toEqual(['api-key: [redacted]']);
  });
});
