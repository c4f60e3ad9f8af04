import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/process.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * An endpoint the registry still names but nothing listens on any more (a pod
 * gone since the last update, or a restarted sidecar's snapshot from disk):
 * on a route with no `retries` section, every call still gets through on the
 * other endpoint, POSTs with their bodies too; `retries: { attempts: 0 }`
 * gives the old behaviour, where half the calls get 503.
 */

describe('a registered endpoint that is gone', () => {
  let app: TestServer;
  beforeAll(async () => {
    // Answers with the body it got.
    app = await startHttpServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => res.end(`got ${body}`));
    });
  });
  afterAll(() => app.close());

  const sidecarWith = async (route: Record<string, unknown>) =>
    startTestSidecar({
      workload: { service: 'frontend', namespace: 'shop' },
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', namespace: 'shop', loadBalancer: 'round_robin', endpoints: [{ address: `127.0.0.1:${await freePort()}` }, { address: app.address }], routes: [route] }],
    });

  const postAll = async (outboundUrl: string, count: number): Promise<number[]> => {
    const statuses: number[] = [];
    for (let i = 0; i < count; i++) {
      const res = await request(`${outboundUrl}/orders`, { method: 'POST', headers: { host: 'orders.shop', 'content-type': 'application/json' }, body: `{"n":${i}}` });
      const body = await res.body.text();
      if (res.statusCode === 200) expect(body).toBe(`got {"n":${i}}`); // the body reached the app whole
      statuses.push(res.statusCode);
    }
    return statuses;
  };

  it('a route without retries: every POST reaches the live endpoint, retried after the refused connection', async () => {
    const sidecar = await sidecarWith({ name: 'all' });
    try {
      expect(await postAll(sidecar.outboundUrl, 6)).toEqual([200, 200, 200, 200, 200, 200]);
      const families = parsePrometheusText(await (await request(`${sidecar.adminUrl}/metrics`)).body.text());
      expect(sumOf(families, 'meshgate_upstream_retries_total')).toBeGreaterThan(0);
    } finally {
      await sidecar.drain(200);
    }
  });

  it('retries: { attempts: 0 }: no retry, the calls that picked the gone endpoint get 503', async () => {
    const sidecar = await sidecarWith({ name: 'all', retries: { attempts: 0 } });
    try {
      const statuses = await postAll(sidecar.outboundUrl, 6);
      expect(statuses.filter((s) => s === 503).length).toBeGreaterThan(0);
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0);
    } finally {
      await sidecar.drain(200);
    }
  });
});
