import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCsr, generateKeyPair } from '../../src/identity/x509.ts';
import { bearerMetadata, startTestCa } from '../helpers/ca-fixture.ts';
import type { OtlpReceiver } from '../helpers/otlp-receiver.ts';
import { startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { freePort } from '../helpers/process.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { plaintextSidecarConfig, type SidecarProcess, startSidecarProcess } from '../helpers/sidecar-process.ts';

describe('telemetry of the other roles, the CLI and the degraded modes', () => {
  let receiver: OtlpReceiver;
  let app: TestServer;
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    app = await startHttpServer(echoHandler('app'));
  });
  afterAll(async () => {
    await app?.close();
    await receiver?.close();
  });

  it('the CA traces each Sign call: a server span (result, SPIFFE ID, gRPC status) around the signing itself', async () => {
    const ca = await startTestCa({ overrides: { telemetry: { tracing: { exporter: 'otlp-grpc', endpoint: receiver.grpcUrl, batch: { scheduledDelay: '20ms' } } } } });
    try {
      const client = ca.client();
      const keys = await generateKeyPair('ecdsa-p256');
      const csrPem = await createCsr(keys, 'ecdsa-p256');
      await client.sign({ csrPem }, bearerMetadata(await ca.token('shop', 'orders')));
      await expect(client.sign({ csrPem }, bearerMetadata('not-a-token'))).rejects.toThrow();
      const spans = await receiver.waitFor((all) => all.filter((s) => s.name === 'meshgate.ca.v1.CertificateAuthority/Sign').length >= 2);
      const signs = spans.filter((s) => s.name === 'meshgate.ca.v1.CertificateAuthority/Sign');
      const issued = signs.find((s) => s.attributes['meshgate.ca.result'] === 'issued')!;
      expect(issued).toMatchObject({ kind: 2, status: { code: 0 } });
      expect(issued.attributes).toMatchObject({ 'rpc.system': 'grpc', 'rpc.method': 'Sign', 'rpc.grpc.status_code': 0, 'meshgate.spiffe_id': 'spiffe://cluster.local/ns/shop/sa/orders' });
      expect(issued.resource).toMatchObject({ 'service.name': 'meshgate-ca', 'meshgate.role': 'ca' });
      const signing = spans.find((s) => s.name === 'sign certificate' && s.traceId === issued.traceId)!;
      expect(signing).toMatchObject({ kind: 1, parentSpanId: issued.spanId });
      expect(signing.attributes['meshgate.ca.serial']).toMatch(/^[0-9A-F]+$/);
      const refused = signs.find((s) => s.attributes['meshgate.ca.result'] !== 'issued')!;
      expect(refused.status.code).toBe(2);
      expect(String(refused.attributes['meshgate.ca.result'])).toMatch(/^token_/);
      expect(JSON.stringify(spans)).not.toContain('not-a-token');
    } finally {
      await ca.close();
    }
  });

  it('a collector that is down: every call still succeeds, one warning, failed spans counted; recovery is logged', async () => {
    receiver.failHttp(true);
    const sc = await startTestSidecar({
      inbound: { app: app.url },
      telemetry: { tracing: { exporter: 'otlp-http', endpoint: receiver.httpUrl, timeout: '1s', batch: { scheduledDelay: '10ms' } } },
    });
    try {
      for (let i = 0; i < 20; i++) {
        const res = await request(`${sc.inboundUrl}/x${i}`);
        await res.body.dump();
        expect(res.statusCode).toBe(200);
        await new Promise((r) => setTimeout(r, 5)); // paced, so the spans leave in several batches (scheduledDelay 10 ms)
      }
      const failed = async () => sumOf(parsePrometheusText(await (await request(`${sc.adminUrl}/metrics`)).body.text()), 'meshgate_trace_spans_total', { result: 'failed' });
      await expect.poll(failed, { timeout: 5_000 }).toBeGreaterThanOrEqual(20);
      expect(sc.logs.filter((l) => String(l.msg).startsWith('trace export failed'))).toHaveLength(1);
      receiver.failHttp(false);
      const res = await request(`${sc.inboundUrl}/after`);
      await res.body.dump();
      await expect.poll(() => sc.logs.some((l) => l.msg === 'trace export recovered'), { timeout: 5_000 }).toBe(true);
    } finally {
      receiver.failHttp(false);
      await sc.drain(200);
    }
  });

  it('a bad telemetry setting: the sidecar starts and serves, says so once, traces nothing', async () => {
    const sc = await startTestSidecar({
      inbound: { app: app.url },
      log: { level: 'info', accessLog: true, accessLogSampling: 7 },
      telemetry: { tracing: { exporter: 'otlp-grpc', endpoint: 'http//missing-colon', samplingRatio: -1 } },
    });
    try {
      const res = await request(`${sc.inboundUrl}/`, { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } });
      const seen = (await res.body.json()) as { headers: Record<string, string> };
      expect(res.statusCode).toBe(200);
      expect(seen.headers.traceparent).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'); // off: passed through untouched
      const warnings = sc.logs.filter((l) => String(l.msg).startsWith('bad telemetry setting')).map((l) => l.msg);
      expect(warnings).toEqual([
        'bad telemetry setting: telemetry.tracing.samplingRatio: expected a number from 0 to 1, got -1; using 1',
        'bad telemetry setting: telemetry.tracing.endpoint: not a URL ("http//missing-colon"); tracing export is off',
        'bad telemetry setting: log.accessLogSampling: expected a number from 0 to 1; logging every call',
      ]);
      await expect.poll(() => sc.logs.filter((l) => l.log === 'access').length).toBe(1);
    } finally {
      await sc.drain(200);
    }
  });

  it('counts request body bytes on HTTP/1.1 (chunked and sized) and HTTP/2 without changing what the app receives', async () => {
    // The app speaks HTTP/1.1 only: an HTTP/2 caller is translated, as for an app behind any sidecar.
    const sc = await startTestSidecar({ inbound: { app: app.url, appProtocol: 'http1' } });
    try {
      const chunked = await request(`${sc.inboundUrl}/up`, {
        method: 'POST',
        body: Readable.from([Buffer.alloc(3000, 1), Buffer.alloc(2000, 2)]),
      });
      expect(((await chunked.body.json()) as { bytes: number }).bytes).toBe(5000);
      const sized = await request(`${sc.inboundUrl}/up`, { method: 'PUT', body: Buffer.alloc(777) });
      expect(((await sized.body.json()) as { bytes: number }).bytes).toBe(777);

      const session = http2.connect(sc.inboundUrl);
      const stream = session.request({ ':method': 'POST', ':path': '/h2' });
      stream.end(Buffer.alloc(4321));
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      await once(stream, 'end');
      session.close();
      expect(JSON.parse(Buffer.concat(chunks).toString())).toMatchObject({ bytes: 4321 });

      await expect
        .poll(() => sc.logs.filter((l) => l.log === 'access').map((l) => [l.method, l.protocol, l.bytes_in]))
        .toEqual([
          ['POST', 'HTTP/1.1', 5000],
          ['PUT', 'HTTP/1.1', 777],
          ['POST', 'HTTP/2', 4321],
        ]);
    } finally {
      await sc.drain(200);
    }
  });

  it('a retried outbound call: each attempt an event on one client span, the resend count on the span', async () => {
    const dead = await freePort(); // nothing listens: the attempt fails to connect
    const sc = await startTestSidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        {
          name: 'flaky',
          namespace: 'default',
          loadBalancer: 'round_robin',
          endpoints: [{ address: `127.0.0.1:${dead}` }, { address: app.address }],
          routes: [{ name: 'retry-connect', retries: { attempts: 2, retryOn: ['connect-failure'], backoff: { base: '1ms', max: '2ms' } } }],
        },
      ],
      telemetry: { tracing: { exporter: 'otlp-http', endpoint: receiver.httpUrl, batch: { scheduledDelay: '10ms' } } },
    });
    try {
      const traceIds: string[] = [];
      for (let i = 0; i < 2; i++) {
        const traceId = `${String(i + 1).repeat(2)}${'0'.repeat(29)}7`;
        traceIds.push(traceId);
        const res = await request(`${sc.outboundUrl}/r${i}`, { headers: { host: 'flaky', traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
        await res.body.dump();
        expect(res.statusCode).toBe(200);
      }
      const spans = await receiver.waitFor((all) => traceIds.every((t) => all.some((s) => s.traceId === t)));
      const retried = spans.find((s) => traceIds.includes(s.traceId) && s.events.length === 2)!;
      expect(retried, 'one of two round-robin calls starts on the dead endpoint').toBeDefined();
      expect(retried.events.map((e) => e.attributes)).toEqual([
        { 'server.address': `127.0.0.1:${dead}`, 'http.request.resend_count': 0, 'error.type': 'connect-failure' },
        { 'server.address': app.address, 'http.request.resend_count': 1, 'http.response.status_code': 200 },
      ]);
      expect(retried.attributes).toMatchObject({ 'http.request.resend_count': 1, 'meshgate.route': 'retry-connect', 'meshgate.upstream': app.address, 'http.response.status_code': 200 });
    } finally {
      await sc.drain(200);
    }
  });

  it('with telemetry.metrics.requests off no call is counted; the other metrics stay', async () => {
    const sc = await startTestSidecar({ inbound: { app: app.url }, log: { level: 'warn', accessLog: false }, telemetry: { metrics: { requests: false } } });
    try {
      const client = new Client(sc.inboundUrl);
      for (let i = 0; i < 3; i++) await (await client.request({ path: '/', method: 'GET' })).body.dump();
      await client.close();
      const families = parsePrometheusText(await (await request(`${sc.adminUrl}/metrics`)).body.text());
      expect(sumOf(families, 'meshgate_requests_total')).toBe(0);
      expect(families.has('meshgate_requests_in_flight')).toBe(true);
    } finally {
      await sc.drain(200);
    }
  });

  it('the CLI reads the standard OTEL_* variables: meshgate sidecar exports to OTEL_EXPORTER_OTLP_ENDPOINT', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-otel-env-'));
    const config = plaintextSidecarConfig(app.url, { workload: { service: 'cli-traced', namespace: 'shop' }, log: { level: 'info', accessLog: false } });
    let sidecar: SidecarProcess | undefined;
    try {
      sidecar = await startSidecarProcess(config, dir, 30_000, {
        env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl, OTEL_BSP_SCHEDULE_DELAY: '20', OTEL_SERVICE_NAME: 'cli-from-env' },
      });
      const res = await request(`http://127.0.0.1:${sidecar.ports.inbound}/cli`);
      await res.body.dump();
      // The process logger's dropped lines are counted (none while stdout is read).
      const families = parsePrometheusText(await (await request(`${sidecar.adminUrl}/metrics`)).body.text());
      expect(sumOf(families, 'meshgate_log_lines_dropped_total', {})).toBe(0);
      expect(families.has('meshgate_log_lines_dropped_total')).toBe(true);
      // SIGTERM: the drain, then the last spans are flushed before exit.
      sidecar.child.kill('SIGTERM');
      expect(await sidecar.exited).toBe(0);
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'cli-from-env'));
      expect(spans.find((s) => s.resource['service.name'] === 'cli-from-env')).toMatchObject({ kind: 2, attributes: { 'url.path': '/cli', 'http.response.status_code': 200 } });
    } finally {
      sidecar?.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
