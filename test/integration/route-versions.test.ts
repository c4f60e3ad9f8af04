import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OtlpReceiver } from '../helpers/otlp-receiver.ts';
import { startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';

/*
 * Route versions and deprecation on the caller's outbound side: one sidecar
 * (workload frontend.shop) whose last-known-good snapshot holds a Route for
 * orders and a registry with two echo endpoints labelled version v1 and v2.
 * No policy server answers (policy.servers points at a closed port). Client
 * spans go to an in-process OTLP receiver.
 */

const SUNSET = '2099-12-31';
const SINCE = '2026-01-15';

const route = policyDoc('Route', 'orders-versions', {
  selector: { services: ['frontend'] },
  service: 'orders',
  // One call in four to v1 when nothing is pinned.
  routes: [
    {
      name: 'split',
      backends: [
        { subset: { version: 'v1' }, weight: 1 },
        { subset: { version: 'v2' }, weight: 3 },
      ],
    },
  ],
  versions: [
    { name: 'v1', subset: { version: 'v1' }, deprecated: { sunset: SUNSET, since: SINCE, message: 'orders v1 goes away;\nmove to v2 – see the wiki' } },
    { name: 'v2', subset: { version: 'v2' } },
    { name: 'v3', subset: { version: 'v3' } },
  ],
});

let stateDir: string;
let v1: TestServer;
let v2: TestServer;
let sc: TestSidecar;
let receiver: OtlpReceiver;

beforeAll(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'meshgate-versions-'));
  receiver = await startOtlpReceiver();
  v1 = await startHttpServer(echoHandler('v1'));
  v2 = await startHttpServer(echoHandler('v2'));
  await writeSnapshot(
    stateDir,
    { service: 'frontend' },
    [route],
    [
      {
        name: 'orders',
        namespace: 'shop',
        endpoints: [
          { address: v1.address, labels: { version: 'v1' }, weight: 1 },
          { address: v2.address, labels: { version: 'v2' }, weight: 1 },
        ],
        identities: [],
        external: true,
      },
    ],
  );
  sc = await startTestSidecar({
    workload: { service: 'frontend', namespace: 'shop' },
    inbound: { app: 'http://127.0.0.1:1' },
    policy: { servers: ['127.0.0.1:1'], stateDir },
    authorization: { allowWhenNoPolicy: true },
    telemetry: { tracing: { exporter: 'otlp-http', endpoint: receiver.httpUrl, batch: { scheduledDelay: '10ms' } } },
  });
});

afterAll(async () => {
  await sc?.drain(200);
  await receiver?.close();
  await v1?.close();
  await v2?.close();
  await rm(stateDir, { recursive: true, force: true });
});

async function call(headers: Record<string, string> = {}) {
  const res = await request(`${sc.outboundUrl}/orders/1`, { headers: { host: 'orders', ...headers } });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: JSON.parse(text) as Record<string, unknown> };
}

async function deprecatedCalls(version: string): Promise<number> {
  const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  return sumOf(parsePrometheusText(text), 'meshgate_deprecated_calls_total', { destination_service: 'orders.shop', version });
}

/** The access-log line of the call sent with this x-request-id, once written (asynchronously). */
async function accessLine(requestId: string): Promise<Record<string, unknown>> {
  await expect.poll(() => sc.logs.some((l) => l.log === 'access' && l.request_id === requestId), { timeout: 2_000, interval: 20 }).toBe(true);
  return sc.logs.find((l) => l.log === 'access' && l.request_id === requestId)!;
}

describe('Route versions on the outbound side', () => {
  it('a call pinned to v2 reaches only v2, and the destination sees the header', async () => {
    const before = { v1: v1.hits(), v2: v2.hits() };
    for (let i = 0; i < 20; i++) {
      const res = await call({ 'x-meshgate-version': 'v2' });
      expect(res.status).toBe(200);
      expect(res.body.name).toBe('v2');
      expect((res.body.headers as Record<string, string>)['x-meshgate-version']).toBe('v2');
      expect(res.headers.sunset).toBeUndefined();
      expect(res.headers.deprecation).toBeUndefined();
    }
    expect(v1.hits() - before.v1).toBe(0);
    expect(v2.hits() - before.v2).toBe(20);
  });

  it('an unknown version gets 404 route.unknown_version, naming no version or label', async () => {
    const before = v1.hits() + v2.hits();
    for (const name of ['v9', 'V2', '', 'v1, v2']) {
      const res = await call({ 'x-meshgate-version': name });
      expect(res.status).toBe(404);
      expect(res.headers['x-meshgate-reason']).toBe('route.unknown_version');
      expect(res.body).toMatchObject({ code: 'route.unknown_version', reason: 'orders.shop has no version of that name' });
      expect(JSON.stringify(res.body)).not.toMatch(/v1|v2|v3|version:/);
    }
    expect(v1.hits() + v2.hits()).toBe(before);
  });

  it('a known version without endpoints is upstream.unavailable', async () => {
    const res = await call({ 'x-meshgate-version': 'v3' });
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ code: 'upstream.unavailable' });
  });

  it('a call answered by deprecated v1 carries Sunset, Deprecation and the message, and is counted and logged', async () => {
    const before = await deprecatedCalls('v1');
    for (let i = 0; i < 3; i++) {
      const res = await call({ 'x-meshgate-version': 'v1' });
      expect(res.status).toBe(200);
      expect(res.body.name).toBe('v1');
      expect(res.headers.sunset).toBe('Thu, 31 Dec 2099 00:00:00 GMT');
      expect(res.headers.deprecation).toBe(`@${Date.UTC(2026, 0, 15) / 1000}`);
      expect(res.headers['x-meshgate-deprecation']).toBe('orders v1 goes away; move to v2 %E2%80%93 see the wiki');
    }
    expect((await deprecatedCalls('v1')) - before).toBe(3);
    const lines = sc.logs.filter((l) => l.msg === 'call to a deprecated version');
    expect(lines).toHaveLength(1); // at most once a minute per (destination, version)
    expect(lines[0]).toMatchObject({ level: 30, caller: 'frontend.shop', destination: 'orders.shop', version: 'v1', sunset: '2099-12-31T00:00:00.000Z' });
    expect(await deprecatedCalls('v2')).toBe(0);
  });

  it('un-pinned calls split per the route, and those that land on v1 are marked deprecated too', async () => {
    const before = { v1: v1.hits(), v2: v2.hits(), counted: await deprecatedCalls('v1') };
    let marked = 0;
    for (let i = 0; i < 200; i++) {
      const res = await call();
      expect(res.status).toBe(200);
      // Deprecation follows the endpoint that answered, not the header.
      expect(res.headers.sunset !== undefined).toBe(res.body.name === 'v1');
      expect(res.headers.deprecation !== undefined).toBe(res.body.name === 'v1');
      if (res.headers.sunset) marked++;
    }
    const hits = { v1: v1.hits() - before.v1, v2: v2.hits() - before.v2 };
    expect(hits.v1 + hits.v2).toBe(200);
    expect(hits.v1).toBeGreaterThan(25); // 50 expected; binomial sd ~6.1
    expect(hits.v1).toBeLessThan(80);
    expect(marked).toBe(hits.v1);
    expect((await deprecatedCalls('v1')) - before.counted).toBe(hits.v1);
  });

  it('the version that answered is in the access log (version) and on the client span (meshgate.version)', async () => {
    const traced: Array<{ traceId: string; version: string | undefined }> = [];
    const send = async (name: string, headers: Record<string, string>) => {
      const traceId = `${(traced.length + 1).toString(16).padStart(2, '0')}${'e'.repeat(29)}7`;
      const res = await call({ ...headers, 'x-request-id': `versions-${name}`, traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
      const line = await accessLine(`versions-${name}`);
      traced.push({ traceId, version: line.version as string | undefined });
      return { res, line };
    };
    expect((await send('pinned-v2', { 'x-meshgate-version': 'v2' })).line).toMatchObject({ direction: 'outbound', status: 200, route: 'split', version: 'v2' });
    expect((await send('pinned-v1', { 'x-meshgate-version': 'v1' })).line).toMatchObject({ status: 200, version: 'v1' });
    // Not pinned: the version of the endpoint the backend split picked.
    for (let i = 0; i < 8; i++) {
      const { res, line } = await send(`split-${i}`, {});
      expect(line.version).toBe(res.body.name);
    }
    // No endpoint answered: no version, pinned or not.
    const empty = await send('pinned-v3', { 'x-meshgate-version': 'v3' });
    expect(empty.line).toMatchObject({ status: 503, reason: 'upstream.unavailable' });
    expect(empty.line).not.toHaveProperty('version');
    const unknown = await send('pinned-v9', { 'x-meshgate-version': 'v9' });
    expect(unknown.line).toMatchObject({ status: 404, reason: 'route.unknown_version' });
    expect(unknown.line).not.toHaveProperty('version');

    const spans = await receiver.waitFor((all) => traced.every((t) => all.some((s) => s.traceId === t.traceId && s.kind === 3)));
    for (const t of traced) {
      const span = spans.find((s) => s.traceId === t.traceId && s.kind === 3)!;
      expect(span.attributes['meshgate.version']).toBe(t.version);
    }
  });
});

describe('Route versions on a static services: entry', () => {
  it('apply too: versions only name label subsets of whatever endpoints the destination has', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-versions-static-'));
    const versionsOnly = policyDoc('Route', 'orders-versions', { service: 'orders', versions: route.spec.versions });
    await writeSnapshot(dir, { service: 'frontend' }, [versionsOnly]);
    const own = await startTestSidecar({
      workload: { service: 'frontend', namespace: 'shop' },
      inbound: { app: 'http://127.0.0.1:1' },
      policy: { servers: ['127.0.0.1:1'], stateDir: dir },
      authorization: { allowWhenNoPolicy: true },
      services: [
        {
          name: 'orders',
          namespace: 'shop',
          endpoints: [
            { address: v1.address, labels: { version: 'v1' } },
            { address: v2.address, labels: { version: 'v2' } },
          ],
        },
      ],
    });
    try {
      const pinned = await request(`${own.outboundUrl}/`, { headers: { host: 'orders.shop', 'x-meshgate-version': 'v1' } });
      expect(((await pinned.body.json()) as { name: string }).name).toBe('v1');
      expect(pinned.headers.sunset).toBe('Thu, 31 Dec 2099 00:00:00 GMT');
      const unknown = await request(`${own.outboundUrl}/`, { headers: { host: 'orders.shop', 'x-meshgate-version': 'v4' } });
      await unknown.body.dump();
      expect(unknown.statusCode).toBe(404);
    } finally {
      await own.drain(200);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
