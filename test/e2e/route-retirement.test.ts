import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendCalls, startMesh } from '../helpers/mesh.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

/*
 * #15, retiring versions, through the mesh: frontend's Route to orders,
 * pushed by the policy server, declares a version in a brown-out window now
 * (the window is written around the real clock the sidecar runs on), one
 * whose window is years away, a retired one, and their successor. orders'
 * sidecar registers its endpoint with the labels the versions name. What the
 * calling app gets, what reaches orders, and the refusals frontend counts and
 * logs.
 */

const HOUR = 3_600_000;
const LINK = 'https://docs.example/orders/v2';

describe('retired and browned-out Route versions, pushed by the policy server', () => {
  let mesh: Mesh;
  const iso = (ms: number) => new Date(ms).toISOString();

  beforeAll(async () => {
    const now = Date.now();
    const route = policyYaml('Route', 'orders-versions', {
      selector: { services: ['frontend'] },
      service: 'orders',
      versions: [
        {
          name: 'v1',
          subset: { version: 'v1' },
          deprecated: { sunset: iso(now + 24 * HOUR), message: 'orders v1 goes away: use v2' },
          brownouts: [{ start: iso(now - HOUR), end: iso(now + HOUR) }],
          successor: { version: 'v2', link: LINK },
        },
        { name: 'v1-later', subset: { version: 'v1' }, brownouts: [{ start: iso(now + 100 * 24 * HOUR), end: iso(now + 101 * 24 * HOUR) }] },
        // No endpoint carries v0 any more: still 410, not 503.
        { name: 'v0', subset: { version: 'v0' }, retired: true },
        { name: 'v2', subset: { track: 'stable' } },
      ],
    });
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allowFrontendCalls, 'shop/route.yaml': route },
      orders: (base) => ({ workload: { ...base.workload, labels: { version: 'v1', track: 'stable' } } }),
      frontend: { log: { level: 'info', accessLog: true } },
      // A pinned v2 answers only once frontend holds the Route and orders' endpoint with its labels.
      ready: { headers: { 'x-meshgate-version': 'v2' } },
    });
  });
  afterAll(async () => {
    await mesh?.close();
  });

  const pinned = (version: string, requestId: string) => mesh.call('/orders/1', { headers: { 'x-meshgate-version': version, 'x-request-id': requestId } });

  async function refusals(reason: string): Promise<number> {
    const text = await (await request(`${mesh.frontend.adminUrl}/metrics`)).body.text();
    return sumOf(parsePrometheusText(text), 'meshgate_requests_total', { direction: 'outbound', reason });
  }

  it('a version inside its brown-out window gets 410 with the successor; orders sees nothing; counted and logged once', async () => {
    const before = { hits: mesh.app.hits(), counted: await refusals('route.version_brownout') };
    const res = await pinned('v1', 'retire-brownout');
    expect(res.status).toBe(410);
    expect(res.headers['x-meshgate-reason']).toBe('route.version_brownout');
    expect(res.headers.link).toBe(`<${LINK}>; rel="successor-version"`);
    expect(res.headers.deprecation).toBe('@0'); // the advance notice is still on the refusal
    expect(res.headers.sunset).toBeDefined();
    const body = JSON.parse(res.text) as { code: string; reason: string };
    expect(body.code).toBe('route.version_brownout');
    expect(body.reason).toMatch(/^version v1 of orders\.shop is browned out until .+ before it is retired: use version v2 \(x-meshgate-version: v2\); see https:\/\/docs\.example\/orders\/v2$/);
    expect(mesh.app.hits()).toBe(before.hits);
    expect((await refusals('route.version_brownout')) - before.counted).toBe(1);
    await expect.poll(() => mesh.frontend.logs.filter((l) => l.log === 'access' && l.request_id === 'retire-brownout'), { timeout: 2_000, interval: 20 }).toHaveLength(1);
    expect(mesh.frontend.logs.find((l) => l.log === 'access' && l.request_id === 'retire-brownout')).toMatchObject({ direction: 'outbound', status: 410, reason: 'route.version_brownout' });
  });

  it('the same endpoints under a version whose window is still to come answer; so does the successor', async () => {
    const before = mesh.app.hits();
    expect((await pinned('v1-later', 'retire-later')).status).toBe(200);
    expect((await pinned('v2', 'retire-successor')).status).toBe(200);
    expect(mesh.app.hits() - before).toBe(2);
  });

  it('a retired version without a successor gets 410 without a Link, even with no endpoint left', async () => {
    const before = await refusals('route.version_retired');
    const res = await pinned('v0', 'retire-v0');
    expect(res.status).toBe(410);
    expect(res.headers['x-meshgate-reason']).toBe('route.version_retired');
    expect(res.headers.link).toBeUndefined();
    expect(JSON.parse(res.text)).toMatchObject({ code: 'route.version_retired', reason: 'version v0 of orders.shop is retired: no successor is named' });
    expect((await refusals('route.version_retired')) - before).toBe(1);
  });
});
