import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

describe('outbound -> inbound -> app', () => {
  let app: TestServer;
  let server: TestSidecar;
  let client: TestSidecar;
  beforeAll(async () => {
    app = await startHttpServer(echoHandler('orders'));
    server = await startTestSidecar({ workload: { service: 'orders' }, inbound: { app: app.url } });
    client = await startTestSidecar({
      workload: { service: 'frontend' },
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: `127.0.0.1:${server.inbound.port}` }] }],
    });
  });
  afterAll(async () => {
    await client.drain(500);
    await server.drain(500);
    await app.close();
  });

  it('GET reaches the app with the original authority, a request id and x-forwarded-for', async () => {
    const res = await request(`${client.outboundUrl}/orders/1?x=1`, { headers: { host: 'orders' } });
    expect(res.statusCode).toBe(200);
    const seen = (await res.body.json()) as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/orders/1?x=1');
    expect(seen.headers.host).toBe('orders');
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/); // a random UUID (version 4)
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1, 127.0.0.1');
  });

  it('POST carries its body', async () => {
    const res = await request(`${client.outboundUrl}/orders`, { method: 'POST', headers: { host: 'orders.default' }, body: 'x'.repeat(1000) });
    const seen = (await res.body.json()) as { bytes: number; method: string };
    expect(seen).toMatchObject({ method: 'POST', bytes: 1000 });
  });
});
