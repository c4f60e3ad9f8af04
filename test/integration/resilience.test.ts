import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { deferAfterEach } from '../helpers/cleanup.ts';
import { createFakeClock } from '../helpers/fake-clock.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

const defer = deferAfterEach();

async function server(handler: Parameters<typeof startHttpServer>[0]): Promise<TestServer> {
  const s = await startHttpServer(handler);
  defer(() => s.close());
  return s;
}

async function sidecar(...args: Parameters<typeof startTestSidecar>): Promise<TestSidecar> {
  const s = await startTestSidecar(...args);
  defer(async () => void (await s.drain(200)));
  return s;
}

async function call(sc: TestSidecar, path: string, opts: { method?: string; host?: string; body?: string } = {}) {
  const res = await request(`${sc.outboundUrl}${path}`, {
    method: (opts.method ?? 'GET') as 'GET',
    headers: { host: opts.host ?? 'orders' },
    body: opts.body,
  });
  const text = await res.body.text();
  return { status: res.statusCode, text, headers: res.headers };
}

describe('load balancing', () => {
  it('spreads calls across endpoints (round robin: exactly even)', async () => {
    const apps = await Promise.all([0, 1, 2].map((i) => server(echoHandler(`app${i}`))));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', loadBalancer: 'round_robin', endpoints: apps.map((a) => ({ address: a.address })) }],
    });
    for (let i = 0; i < 30; i++) expect((await call(sc, '/')).status).toBe(200);
    expect(apps.map((a) => a.hits())).toEqual([10, 10, 10]);
  });

  it('weighted split between backends follows the weights', async () => {
    const v1 = await server(echoHandler('v1'));
    const v2 = await server(echoHandler('v2'));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        {
          name: 'orders',
          endpoints: [
            { address: v1.address, labels: { version: 'v1' } },
            { address: v2.address, labels: { version: 'v2' } },
          ],
          routes: [
            {
              backends: [
                { subset: { version: 'v1' }, weight: 80 },
                { subset: { version: 'v2' }, weight: 20 },
              ],
            },
          ],
        },
      ],
    });
    for (let i = 0; i < 200; i++) await call(sc, '/');
    expect(v1.hits() + v2.hits()).toBe(200);
    expect(v2.hits()).toBeGreaterThan(15); // 40 expected; binomial sd ~5.7
    expect(v2.hits()).toBeLessThan(70);
  });

  it('routes by path, method and header, and 404s with a reason code when nothing matches', async () => {
    const api = await server(echoHandler('api'));
    const admin = await server(echoHandler('admin'));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        { name: 'admin-svc', endpoints: [{ address: admin.address }] },
        {
          name: 'orders',
          endpoints: [{ address: api.address }],
          routes: [
            { name: 'beta', match: { headers: [{ name: 'X-Beta', exact: 'yes' }] }, backends: [{ service: 'admin-svc' }] },
            { name: 'api', match: { path: { prefix: '/api/' }, methods: ['GET'] }, responseHeaders: { set: { 'x-route': 'api' } } },
          ],
        },
      ],
    });
    const hit = await call(sc, '/api/items');
    expect(hit.status).toBe(200);
    expect(hit.headers['x-route']).toBe('api');
    const beta = await request(`${sc.outboundUrl}/anything`, { headers: { host: 'orders', 'x-beta': 'yes' } });
    expect(((await beta.body.json()) as { name: string }).name).toBe('admin');
    const miss = await call(sc, '/api/items', { method: 'DELETE' });
    expect(miss.status).toBe(404);
    expect(JSON.parse(miss.text)).toMatchObject({ code: 'route.not_found' });
    const unknown = await call(sc, '/', { host: 'payments.shop' });
    expect(unknown.status).toBe(404);
  });
});

describe('retries', () => {
  const flaky = (failures: number) => {
    let seen = 0;
    return server((req, res) => {
      req.resume();
      req.on('end', () => {
        seen++;
        if (seen <= failures) {
          res.writeHead(503, { 'content-type': 'text/plain' });
          res.end('busy');
        } else {
          res.end(`ok after ${seen}`);
        }
      });
    });
  };

  it('retries a GET that got 503 and returns the success', async () => {
    const app = await flaky(2);
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: app.address }], routes: [{ retries: { attempts: 2 } }] }],
    });
    const res = await call(sc, '/');
    expect(res).toMatchObject({ status: 200, text: 'ok after 3' });
    expect(app.hits()).toBe(3);
    const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/meshgate_upstream_retries_total\{destination_service="orders.default"\} 2/);
  });

  it('does not retry a POST that got 503', async () => {
    const app = await flaky(1);
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: app.address }], routes: [{ retries: { attempts: 3 } }] }],
    });
    const res = await call(sc, '/', { method: 'POST', body: 'pay once' });
    expect(res.status).toBe(503);
    expect(app.hits()).toBe(1);
  });

  it('retries a PUT with its body replayed to another endpoint', async () => {
    const bad = await server((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(503).end());
    });
    const good = await server(echoHandler('good'));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        {
          name: 'orders',
          loadBalancer: 'round_robin',
          endpoints: [{ address: bad.address }, { address: good.address }],
          routes: [{ retries: { attempts: 1 } }],
        },
      ],
    });
    for (let i = 0; i < 4; i++) {
      const res = await call(sc, '/', { method: 'PUT', body: 'z'.repeat(5000) });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text)).toMatchObject({ name: 'good', bytes: 5000 });
    }
  });

  it('retries a connect failure on another endpoint even for POST', async () => {
    const good = await server(echoHandler('good'));
    const closed = await server(echoHandler('closed'));
    await closed.close();
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        {
          name: 'orders',
          loadBalancer: 'round_robin',
          endpoints: [{ address: closed.address }, { address: good.address }],
          routes: [{ retries: { attempts: 1 } }],
        },
      ],
    });
    for (let i = 0; i < 4; i++) expect((await call(sc, '/', { method: 'POST', body: 'x' })).status).toBe(200);
  });
});

describe('timeouts', () => {
  it('answers 504 upstream.timeout when the upstream is slower than the route timeout', async () => {
    const pending: Array<() => void> = [];
    const slow = await server((_req, res) => pending.push(() => res.end('late')));
    defer(async () => pending.forEach((f) => f()));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: slow.address }], routes: [{ timeout: '150ms' }] }],
    });
    const started = performance.now();
    const res = await call(sc, '/slow');
    const elapsed = performance.now() - started;
    expect(res.status).toBe(504);
    expect(JSON.parse(res.text)).toMatchObject({ code: 'upstream.timeout' });
    expect(res.headers['x-meshgate-reason']).toBe('upstream.timeout');
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(2000);
  });
});

describe('outlier detection', () => {
  it('ejects an endpoint after consecutive 5xx and brings it back after the cool-down', async () => {
    let healthy = false;
    const sick = await server((_req, res) => {
      res.writeHead(healthy ? 200 : 500).end(healthy ? 'sick-recovered' : 'sick');
    });
    const fine = await server((_req, res) => res.end('fine'));
    const clock = createFakeClock();
    const sc = await sidecar(
      {
        inbound: { app: 'http://127.0.0.1:1' },
        services: [
          {
            name: 'orders',
            loadBalancer: 'round_robin',
            endpoints: [{ address: sick.address }, { address: fine.address }],
            outlierDetection: { consecutive5xx: 3, baseEjection: '30s', maxEjectionPercent: 50 },
          },
        ],
      },
      { clock },
    );
    for (let i = 0; i < 6; i++) await call(sc, '/');
    expect(sick.hits()).toBe(3);
    // Ejected: every call now goes to the healthy endpoint.
    for (let i = 0; i < 10; i++) expect((await call(sc, '/')).text).toBe('fine');
    expect(sick.hits()).toBe(3);
    const dump = (await (await request(`${sc.adminUrl}/config_dump`)).body.json()) as { endpoints: Array<{ endpoints: Array<{ address: string; ejected: boolean }> }> };
    expect(dump.endpoints[0]!.endpoints.find((e) => e.address === sick.address)?.ejected).toBe(true);
    healthy = true;
    clock.advance(30_001);
    const texts = new Set<string>();
    for (let i = 0; i < 4; i++) texts.add((await call(sc, '/')).text);
    expect(texts).toEqual(new Set(['fine', 'sick-recovered']));
    const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/meshgate_outlier_ejections_total\{destination_service="orders.default"\} 1/);
  });
});

describe('active health checks', () => {
  it('takes an endpoint whose health check fails out of rotation and puts it back when it passes', async () => {
    let sickHealthy = false;
    const sick = await server((req, res) => {
      if (req.url === '/healthz') res.writeHead(sickHealthy ? 200 : 503).end();
      else res.end('sick');
    });
    const fine = await server((_req, res) => res.end('fine'));
    const sc = await sidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      services: [
        {
          name: 'orders',
          loadBalancer: 'round_robin',
          endpoints: [{ address: sick.address }, { address: fine.address }],
          healthCheck: { path: '/healthz', interval: '20ms', timeout: '500ms', unhealthyThreshold: 1, healthyThreshold: 1 },
        },
      ],
    });
    const endpointState = async () => {
      const dump = (await (await request(`${sc.adminUrl}/config_dump`)).body.json()) as {
        endpoints: Array<{ endpoints: Array<{ address: string; healthy: boolean }> }>;
      };
      return dump.endpoints[0]!.endpoints.find((e) => e.address === sick.address)!.healthy;
    };
    await expect.poll(endpointState, { timeout: 5_000, interval: 20 }).toBe(false);
    for (let i = 0; i < 6; i++) expect((await call(sc, '/')).text).toBe('fine');
    sickHealthy = true;
    await expect.poll(endpointState, { timeout: 5_000, interval: 20 }).toBe(true);
    const texts = new Set<string>();
    for (let i = 0; i < 4; i++) texts.add((await call(sc, '/')).text);
    expect(texts).toEqual(new Set(['fine', 'sick']));
  });
});
