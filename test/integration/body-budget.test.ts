import http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { echoHandler } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { policyDoc } from '../helpers/static-policy.ts';

/*
 * limits.maxBufferedBodies through a real sidecar: slow callers parked on
 * bodies a ValidationPolicy must read cannot make the sidecar hold more than
 * the budget; the next such call is shed with a retryable 503 and is admitted
 * once the budget is free again. Calls whose body no rule reads still stream.
 */

const KiB = 1024;

describe('sidecar-wide budget for buffered request bodies', () => {
  let pair: AppAndSidecar;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: echoHandler('orders'),
      policy: [policyDoc('ValidationPolicy', 'orders-input', { rules: [{ name: 'create', match: { paths: ['/orders'], methods: ['POST'] }, jsonSchema: { type: 'object' } }] })],
      config: () => ({ limits: { maxBodyBuffer: '64KiB', maxBufferedBodies: '64KiB' }, log: { level: 'warn', accessLog: false } }),
    });
    ({ sc: sidecar } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  const post = async (p: string, body: string) => {
    const res = await request(`${sidecar.inboundUrl}${p}`, { method: 'POST', headers: { host: 'orders.shop', 'content-type': 'application/json' }, body });
    const text = await res.body.text();
    return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string }).code, retryAfter: res.headers['retry-after'] };
  };

  const metric = async (name: string): Promise<number> => {
    const text = await (await request(`${sidecar.adminUrl}/metrics`)).body.text();
    return Number(
      text
        .split('\n')
        .find((l) => l.startsWith(`${name} `))
        ?.split(' ')[1],
    );
  };

  it('a slow caller holding most of the budget makes the next body read answer 503 sidecar.overloaded, until it finishes', async () => {
    // The slow caller: a chunked JSON body, 60 KiB sent, the end withheld.
    const slow = http.request(`${sidecar.inboundUrl}/orders`, { method: 'POST', headers: { host: 'orders.shop', 'content-type': 'application/json', 'transfer-encoding': 'chunked' } });
    const slowAnswer = new Promise<number>((resolve, reject) => {
      slow.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      slow.on('error', reject);
    });
    slow.write(`{"pad":"${'x'.repeat(60 * KiB)}`);
    await expect.poll(() => metric('meshgate_buffered_body_bytes'), { timeout: 5_000 }).toBeGreaterThanOrEqual(60 * KiB);

    const shed = await post('/orders', JSON.stringify({ pad: 'y'.repeat(8 * KiB) }));
    expect(shed).toEqual({ status: 503, code: 'sidecar.overloaded', retryAfter: '1' });
    // A body no rule reads is not buffered: it streams whatever the budget says.
    expect((await post('/uploads/1', 'z'.repeat(16 * KiB))).status).toBe(200);

    slow.end('"}');
    expect(await slowAnswer).toBe(200);
    expect(await metric('meshgate_buffered_body_bytes')).toBe(0);
    expect((await post('/orders', JSON.stringify({ pad: 'y'.repeat(8 * KiB) }))).status).toBe(200);
  });
});
