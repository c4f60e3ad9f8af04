import { once } from 'node:events';
import http2 from 'node:http2';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * Issue #10, defect 2: HTTP/2 rapid reset (CVE-2023-44487). A caller that
 * opens streams and resets them at once gets GOAWAY ENHANCE_YOUR_CALM after a
 * small budget (not nghttp2's 1 000 resets and INTERNAL_ERROR); a caller
 * that cancels a few of its calls is never cut off.
 */

const ENHANCE_YOUR_CALM = http2.constants.NGHTTP2_ENHANCE_YOUR_CALM;

async function connect(url: string) {
  const session = http2.connect(url);
  session.on('error', () => {});
  await once(session, 'connect');
  const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
  const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  return { session, goaway, closed };
}

describe('HTTP/2 rapid reset is bounded per connection', () => {
  let app: TestServer;
  let appCalls = 0;
  let appOpen = 0;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    app = await startHttpServer((req, res) => {
      appCalls++;
      appOpen++;
      res.once('close', () => appOpen--);
      // The reset calls are never answered, so a reset always comes before the answer (no race with a timer).
      if (req.url?.startsWith('/r/')) return;
      res.end('ok');
    });
    sidecar = await startTestSidecar({ workload: { service: 'orders' }, inbound: { app: app.url }, limits: { http2RapidResetMinStreams: 100 } });
  });
  afterAll(async () => {
    await sidecar?.drain(500);
    await app?.close();
  });

  it('answers GOAWAY ENHANCE_YOUR_CALM within the budget to a caller that opens and resets 1 000 streams', async () => {
    appCalls = 0;
    const { session, goaway, closed } = await connect(sidecar.inboundUrl);
    let opened = 0;
    for (let i = 0; i < 1000 && !session.destroyed && !session.closed; i++) {
      const stream = session.request({ ':method': 'GET', ':path': `/r/${i}`, ':authority': 'orders' });
      stream.on('error', () => {});
      stream.close(http2.constants.NGHTTP2_CANCEL);
      opened++;
      // Let frames flow now and then, as a real attacker's socket would.
      if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await goaway).toBe(ENHANCE_YOUR_CALM);
    await closed;
    // Cut off after about the budget's worth of streams, not after ~1 000 resets.
    const metricsText = await (await request(`${sidecar.adminUrl}/metrics`)).body.text();
    expect(sumOf(parsePrometheusText(metricsText), 'meshgate_connections_closed_total', { listener: 'inbound', reason: 'http2_rapid_reset' })).toBe(1);
    expect(sidecar.logs.filter((l) => String(l.msg).startsWith('connection closed: the caller abused the protocol') && l.reason === 'http2_rapid_reset')).toHaveLength(1);
    expect(appCalls).toBeLessThan(300);
    expect(opened).toBeGreaterThan(0);
    // The cut-off connection's calls are not left waiting on the app (it never answers them): each is cancelled upstream.
    await eventually(() => appOpen, { until: (n) => n === 0, what: 'no call of the cut-off connection left open at the app' });
    const ready = await request(`${sidecar.adminUrl}/ready`);
    await ready.body.dump();
    expect(ready.statusCode).toBe(200);
  });

  it('keeps a connection whose caller cancels one call in ten', async () => {
    const { session, goaway } = await connect(sidecar.inboundUrl);
    let cutOff = false;
    void goaway.then(() => (cutOff = true));
    const statuses: Array<number | 'cancelled'> = [];
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 30 }, (_, i) => {
          const stream = session.request({ ':method': 'GET', ':path': `/ok/${batch}/${i}`, ':authority': 'orders' });
          stream.on('error', () => {});
          if (i % 10 === 0) {
            stream.close(http2.constants.NGHTTP2_CANCEL);
            statuses.push('cancelled');
            return once(stream, 'close');
          }
          return new Promise<void>((resolve) => {
            stream.on('response', (headers) => statuses.push(Number(headers[':status'])));
            stream.resume();
            stream.on('close', () => resolve());
          });
        }),
      );
    }
    expect(cutOff).toBe(false);
    expect(statuses.filter((s) => s === 200)).toHaveLength(270);
    session.close();
  });
});
