import type { IncomingHttpHeaders } from 'node:http';
import { SpanKind } from '@opentelemetry/api';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TracingConfig } from '../../src/config/telemetry-schema.ts';
import { resolveTracingSettings } from '../../src/config/telemetry-schema.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import type { Tracing } from '../../src/telemetry/tracing.ts';
import { createTracing } from '../../src/telemetry/tracing.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { FRONTEND, startMesh } from '../helpers/mesh.ts';
import type { OtlpReceiver, ReceivedSpan } from '../helpers/otlp-receiver.ts';
import { startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';

/*
 * frontend app -> frontend sidecar (outbound) -> mTLS -> orders sidecar
 * (inbound) -> orders app, with both apps instrumented like real ones, the
 * sidecars exporting over OTLP (frontend over gRPC, orders over HTTP) to a
 * real OTLP receiver, and the policy server deciding.
 */

const allow = policyYaml('AuthorizationPolicy', 'frontend-calls', {
  selector: { services: ['orders'] },
  action: 'ALLOW',
  rules: [{ name: 'reads-and-orders', from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET', 'POST'], paths: ['/orders/*'] }] }],
});

/** An instrumented app's own tracing, exporting to the same receiver. */
async function appTracing(receiver: OtlpReceiver, serviceName: string): Promise<Tracing> {
  const section = { exporter: 'otlp-http', endpoint: receiver.httpUrl, batch: { scheduledDelay: 20 } } as TracingConfig;
  const logger = createLogger({ level: 'silent', name: serviceName, destination: process.stderr });
  return createTracing(resolveTracingSettings(section, {}, { serviceName }).settings, { logger });
}

describe('telemetry of a call through two sidecars', () => {
  let receiver: OtlpReceiver;
  let mesh: Mesh;
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let frontendApp: Tracing;
  let ordersAppTracing: Tracing;
  let orders: TestSidecar;
  let frontend: TestSidecar;
  /** Headers the orders app received, by x-request-id. */
  const seenByApp = new Map<string, IncomingHttpHeaders>();

  /** Each sidecar's tracing section: its exporter, batches leaving every 20 ms. */
  const tracing = (exporter: Record<string, unknown>) => ({ telemetry: { tracing: { ...exporter, batch: { scheduledDelay: '20ms' } } } });

  let calls = 0;
  /** A call from the frontend app; its x-request-id finds it in the app's view and the logs. */
  const call = async (p: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) => {
    const requestId = `call-${++calls}`;
    const res = await request(`${frontend.outboundUrl}${p}`, {
      method: (init.method ?? 'GET') as 'GET',
      headers: { host: 'orders.shop', 'x-request-id': requestId, ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
    const text = await res.body.text();
    return { status: res.statusCode, text, requestId };
  };

  const spansOfTrace = (traceId: string, count: number): Promise<ReceivedSpan[]> =>
    receiver.waitFor((spans) => spans.filter((s) => s.traceId === traceId).length >= count).then((spans) => spans.filter((s) => s.traceId === traceId));

  const metrics = async (sc: TestSidecar) => parsePrometheusText(await (await request(`${sc.adminUrl}/metrics`)).body.text());

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    frontendApp = await appTracing(receiver, 'frontend-app');
    ordersAppTracing = await appTracing(receiver, 'orders-app');
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allow },
      server: { telemetry: { tracing: { exporter: 'otlp-http', endpoint: receiver.httpUrl, batch: { scheduledDelay: '20ms' } } } },
      app: (req, res) => {
        // What an instrumented app does: its server span continues the trace the sidecar passed on.
        const span = ordersAppTracing.tracer!.startSpan(`${req.method} /orders/{id}`, { kind: SpanKind.SERVER }, ordersAppTracing.extract(req.headers));
        seenByApp.set(String(req.headers['x-request-id']), req.headers);
        let bytes = 0;
        req.on('data', (c: Buffer) => (bytes += c.length));
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ok: true, bytes }));
          span.end();
        });
      },
      sidecars: { log: { level: 'info', accessLog: true } },
      stateDirPerSidecar: true,
      orders: tracing({ exporter: 'otlp-http', endpoint: receiver.httpUrl }),
      frontend: tracing({ exporter: 'otlp-grpc', endpoint: receiver.grpcUrl }),
      ready: { path: '/orders/0' },
    });
    ({ h, ps, orders, frontend } = mesh);
  });
  afterAll(async () => {
    await mesh?.close();
    await frontendApp?.shutdown();
    await ordersAppTracing?.shutdown();
    await receiver?.close();
  });

  it('is one trace: app client span -> frontend client span -> orders server span -> app server span', async () => {
    const root = frontendApp.tracer!.startSpan('GET orders', { kind: SpanKind.CLIENT });
    const headers: Record<string, string> = { baggage: 'user=42', 'user-agent': 'frontend-app/1.0' };
    frontendApp.inject(root, headers);
    headers.tracestate = 'vendor=abc';
    const res = await call('/orders/7', { headers });
    root.end();
    expect(res.status).toBe(200);
    const traceId = root.spanContext().traceId;

    const spans = await spansOfTrace(traceId, 4);
    const byService = (name: string) => spans.filter((s) => s.resource['service.name'] === name);
    expect(spans.map((s) => s.resource['service.name']).sort()).toEqual(['frontend-app', 'frontend.shop', 'orders-app', 'orders.shop']);
    const [app] = byService('frontend-app');
    const [out] = byService('frontend.shop');
    const [inb] = byService('orders.shop');
    const [served] = byService('orders-app');

    expect(out).toMatchObject({ kind: 3, parentSpanId: app!.spanId, name: 'GET orders.shop', traceState: 'vendor=abc' });
    expect(inb).toMatchObject({ kind: 2, parentSpanId: out!.spanId, name: 'GET', traceState: 'vendor=abc' });
    expect(served).toMatchObject({ kind: 2, parentSpanId: inb!.spanId });

    expect(out!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/orders/7',
      'url.full': 'http://orders.shop/orders/7',
      'server.address': 'orders.shop',
      'http.response.status_code': 200,
      'network.protocol.version': '1.1',
      'user_agent.original': 'frontend-app/1.0',
      'meshgate.destination.service': 'orders.shop',
      'meshgate.upstream': `127.0.0.1:${orders.inbound.port}`,
      'meshgate.request_id': res.requestId,
    });
    expect(out!.events).toEqual([{ name: 'upstream_attempt', attributes: { 'server.address': `127.0.0.1:${orders.inbound.port}`, 'http.request.resend_count': 0, 'http.response.status_code': 200 } }]);
    expect(inb!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/orders/7',
      'http.response.status_code': 200,
      'client.address': '127.0.0.1',
      'meshgate.source.principal': FRONTEND,
      'meshgate.destination.service': 'orders.shop',
      'meshgate.decision': 'allow',
      'meshgate.decision.rule': expect.stringContaining('frontend-calls'),
    });
    expect(out!.status.code).toBe(0);
    expect(inb!.status.code).toBe(0);
    expect(inb!.resource).toMatchObject({ 'meshgate.role': 'sidecar', 'service.namespace': 'shop' });

    // The app got W3C context naming the orders sidecar's span, with tracestate and baggage passed on.
    const got = seenByApp.get(res.requestId)!;
    expect(got.traceparent).toBe(`00-${traceId}-${inb!.spanId}-01`);
    expect(got.tracestate).toBe('vendor=abc');
    expect(got.baggage).toBe('user=42');

    // The access log names the same trace and span.
    await expect.poll(() => orders.logs.find((l) => l.log === 'access' && l.request_id === res.requestId)).toMatchObject({ trace_id: traceId, span_id: inb!.spanId });
  });

  it.each([
    ['single b3 header', 'b1b2c3d4e5f60718293a4b5c6d7e8f90', (t: string, s: string): Record<string, string> => ({ b3: `${t}-${s}-1` })],
    ['multiple x-b3 headers', 'c1b2c3d4e5f60718293a4b5c6d7e8f90', (t: string, s: string): Record<string, string> => ({ 'x-b3-traceid': t, 'x-b3-spanid': s, 'x-b3-sampled': '1' })],
  ])('B3 in (%s), W3C out', async (_name, traceId, b3) => {
    const parent = '0123456789abcdef';
    const res = await call('/orders/8', { headers: b3(traceId, parent) });
    expect(res.status).toBe(200);
    const spans = await spansOfTrace(traceId, 3);
    const out = spans.find((s) => s.resource['service.name'] === 'frontend.shop')!;
    const inb = spans.find((s) => s.resource['service.name'] === 'orders.shop')!;
    expect(out.parentSpanId).toBe(parent);
    expect(inb.parentSpanId).toBe(out.spanId);
    const got = seenByApp.get(res.requestId)!;
    expect(got.traceparent).toBe(`00-${traceId}-${inb.spanId}-01`);
    for (const name of ['b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-sampled']) expect(got[name], name).toBeUndefined();
  });

  it('an unsampled caller stays unsampled: no spans, W3C flag 00 passed on', async () => {
    const traceId = 'ffeeddccbbaa99887766554433221100';
    const res = await call('/orders/9', { headers: { traceparent: `00-${traceId}-1111111111111111-00` } });
    expect(res.status).toBe(200);
    expect(seenByApp.get(res.requestId)!.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
    // A sampled call after it: once its spans are in, the unsampled call's would have been too.
    const sampledTrace = '00112233445566778899aabbccddeeff';
    expect((await call('/orders/10', { headers: { traceparent: `00-${sampledTrace}-2222222222222222-01` } })).status).toBe(200);
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === sampledTrace).length, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
    expect(receiver.spans().filter((s) => s.traceId === traceId)).toEqual([]);
  });

  it('a denied call: the decision, reason and rule on the server span; a failed client span', async () => {
    const root = frontendApp.tracer!.startSpan('DELETE orders', { kind: SpanKind.CLIENT });
    const headers: Record<string, string> = {};
    frontendApp.inject(root, headers);
    const res = await call('/orders/1', { method: 'DELETE', headers });
    root.end();
    expect(res.status).toBe(403);
    const spans = await spansOfTrace(root.spanContext().traceId, 3);
    const out = spans.find((s) => s.resource['service.name'] === 'frontend.shop')!;
    const inb = spans.find((s) => s.resource['service.name'] === 'orders.shop')!;
    expect(inb.attributes).toMatchObject({ 'meshgate.decision': 'deny', 'meshgate.reason': 'authz.denied', 'http.response.status_code': 403 });
    expect(inb.status.code).toBe(0); // a 4xx is the caller's error, not the server's (semantic conventions)
    expect(out.status.code).toBe(2);
    expect(out.attributes['error.type']).toBe('403');
    expect(spans.some((s) => s.resource['service.name'] === 'orders-app')).toBe(false);
  });

  it('a denied gRPC call: rpc attributes and the gRPC status meshgate answered with', async () => {
    const root = frontendApp.tracer!.startSpan('grpc call', { kind: SpanKind.CLIENT });
    const headers: Record<string, string> = { 'content-type': 'application/grpc', te: 'trailers' };
    frontendApp.inject(root, headers);
    const res = await call('/shop.Orders/Get', { method: 'POST', headers, body: '' });
    root.end();
    expect(res.status).toBe(200); // gRPC: the status travels in grpc-status
    const spans = await spansOfTrace(root.spanContext().traceId, 3);
    const inb = spans.find((s) => s.resource['service.name'] === 'orders.shop')!;
    expect(inb.attributes).toMatchObject({
      'rpc.system': 'grpc',
      'rpc.service': 'shop.Orders',
      'rpc.method': 'Get',
      'rpc.grpc.status_code': 7,
      'meshgate.reason': 'authz.denied',
      'meshgate.decision': 'deny',
    });
    expect(inb.status.code).toBe(0); // PERMISSION_DENIED is not a server error (semantic conventions)
  });

  it('logs one access line per call on each sidecar, with bytes in and out, and never a token, a cookie or a key', async () => {
    const token = 'eyJhbGciOiJIUzI1NiJ9.SECRET-TOKEN-4711';
    const cookie = 'session=COOKIE-SECRET-0815';
    const body = 'x'.repeat(1500);
    const res = await call('/orders/new?access_token=QUERY-SECRET-42', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, cookie, 'x-api-key': 'APIKEY-SECRET-99', 'content-type': 'text/plain' },
      body,
    });
    expect(res.status).toBe(200);
    const appSaw = seenByApp.get(res.requestId)!;
    expect(appSaw.authorization).toBe(`Bearer ${token}`); // the app still gets its credentials
    const line = (sc: TestSidecar) => sc.logs.find((l) => l.log === 'access' && l.request_id === res.requestId);
    await expect.poll(() => line(orders)).toBeDefined();
    await expect.poll(() => line(frontend)).toBeDefined();
    for (const [sc, direction] of [
      [frontend, 'outbound'],
      [orders, 'inbound'],
    ] as const) {
      expect(line(sc)).toMatchObject({
        direction,
        method: 'POST',
        authority: 'orders.shop',
        path: '/orders/new',
        status: 200,
        bytes_in: 1500,
        bytes_out: res.text.length,
        request_id: res.requestId,
        trace_id: expect.stringMatching(/^[0-9a-f]{32}$/),
        time: expect.any(String),
        duration_ms: expect.any(Number),
      });
    }
    expect(line(orders)).toMatchObject({ source_principal: FRONTEND, decision: 'allow', rule: expect.stringContaining('frontend-calls'), upstream: expect.stringContaining('127.0.0.1:') });
    expect(line(frontend)).toMatchObject({ upstream: `127.0.0.1:${orders.inbound.port}`, retries: 0 });

    await spansOfTrace(String(line(orders)!.trace_id), 3);
    const everything = [JSON.stringify(frontend.logs), JSON.stringify(orders.logs), JSON.stringify(ps.logs), ...receiver.rawBodies().map((b) => b.toString('latin1'))].join('\n');
    for (const secret of ['SECRET-TOKEN-4711', 'COOKIE-SECRET-0815', 'QUERY-SECRET-42', 'APIKEY-SECRET-99']) expect(everything).not.toContain(secret);
  });

  it('/metrics is valid Prometheus text and its counters match the calls sent', async () => {
    const [fBefore, oBefore] = [await metrics(frontend), await metrics(orders)];
    for (let i = 0; i < 5; i++) expect((await call(`/orders/${i}`)).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await call(`/orders/${i}`, { method: 'DELETE' })).status).toBe(403);
    const [fAfter, oAfter] = [await metrics(frontend), await metrics(orders)];
    const delta = (before: typeof fBefore, after: typeof fAfter, name: string, labels: Record<string, string>) => sumOf(after, name, labels) - sumOf(before, name, labels);

    const out = { direction: 'outbound', destination_service: 'orders.shop' };
    expect(delta(fBefore, fAfter, 'meshgate_requests_total', { ...out, response_code: '200', reason: '' })).toBe(5);
    expect(delta(fBefore, fAfter, 'meshgate_requests_total', { ...out, response_code: '403', reason: '' })).toBe(2);
    expect(delta(fBefore, fAfter, 'meshgate_request_duration_seconds_count', out)).toBe(7);
    const inb = { direction: 'inbound', destination_service: 'orders.shop', source_principal: FRONTEND };
    expect(delta(oBefore, oAfter, 'meshgate_requests_total', { ...inb, response_code: '200', reason: '' })).toBe(5);
    expect(delta(oBefore, oAfter, 'meshgate_requests_total', { ...inb, response_code: '403', reason: 'authz.denied' })).toBe(2);
    expect(delta(oBefore, oAfter, 'meshgate_request_duration_seconds_count', { direction: 'inbound' })).toBe(7);
    expect(fAfter.get('meshgate_request_duration_seconds')?.type).toBe('histogram');
    expect(sumOf(fAfter, 'meshgate_trace_spans_total', { result: 'exported' })).toBeGreaterThan(0);
  });

  it('keeps label values bounded: destinations the app invents collapse to "unknown"', async () => {
    const unknown = { destination_service: 'unknown', reason: 'route.not_found' };
    const before = sumOf(await metrics(frontend), 'meshgate_requests_total', unknown);
    for (const name of ['nowhere-1', 'nowhere-2', 'nowhere-3']) {
      const res = await request(`${frontend.outboundUrl}/x`, { headers: { host: `${name}.shop` } });
      await res.body.dump();
      expect(res.statusCode).toBe(404);
    }
    const text = await (await request(`${frontend.adminUrl}/metrics`)).body.text();
    expect(text).not.toContain('nowhere');
    expect(sumOf(parsePrometheusText(text), 'meshgate_requests_total', unknown) - before).toBe(3);
    // The access log still tells the operator which name the app asked for.
    expect(frontend.logs.filter((l) => l.log === 'access' && String(l.authority).startsWith('nowhere-')).length).toBe(3);
  });

  it('the policy server traces its work: each subscription, and each push round', async () => {
    await receiver.waitFor((spans) => spans.filter((s) => s.name === 'policy subscribe').length >= 2);
    const subscribed = receiver.spans().filter((s) => s.name === 'policy subscribe');
    expect(subscribed.map((s) => s.attributes['meshgate.spiffe_id']).sort()).toEqual(expect.arrayContaining([FRONTEND, 'spiffe://cluster.local/ns/shop/sa/orders']));
    expect(subscribed[0]!.resource['service.name']).toBe('meshgate-policy-server');
    await h.write('shop/extra.yaml', allow.replace('frontend-calls', 'frontend-extra'));
    const spans = await receiver.waitFor((all) => all.some((s) => s.name === 'policy push' && Number(s.attributes['meshgate.policy.pushed']) >= 1));
    const push = spans.find((s) => s.name === 'policy push' && Number(s.attributes['meshgate.policy.pushed']) >= 1)!;
    expect(push).toMatchObject({ kind: 1, parentSpanId: '' });
    expect(push.attributes['meshgate.policy.subscribers']).toBeGreaterThanOrEqual(2);
  });

  it('/config_dump shows the tracing settings but never the export headers', async () => {
    const dump = (await (await request(`${orders.adminUrl}/config_dump`)).body.json()) as { config: { telemetry: { tracing: Record<string, unknown> } } };
    expect(dump.config.telemetry.tracing).toMatchObject({ exporter: 'otlp-http', endpoint: `${receiver.httpUrl}/v1/traces`, samplingRatio: 1, serviceName: 'orders.shop' });
  });
});
