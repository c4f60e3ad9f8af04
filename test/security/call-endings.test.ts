import type http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { bothListeners, serviceTo, startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { connectRaw } from '../helpers/raw-socket.ts';
import type { TestServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc } from '../helpers/static-policy.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, defect 5: the status and reason a call is logged with say who
 * ended it. 499 request.cancelled only when the caller left; 504 (or 408 while
 * the caller was still sending) when a meshgate timer fired; 502 when the
 * upstream failed. Timers are short (limits.idleTimeout 500 ms) so each case
 * takes about a second.
 */

const IDLE_MS = 500;

/** An app whose paths behave badly on purpose; each request is counted. */
function misbehaving(): http.RequestListener {
  return (req, res) => {
    const url = req.url ?? '/';
    if (url === '/slow-head') {
      // Answers after the sidecar's idle timeout, well within the route timeout.
      const timer = setTimeout(() => res.end('late'), IDLE_MS * 3);
      res.on('close', () => clearTimeout(timer));
    } else if (url === '/stall-body') {
      res.writeHead(200);
      res.write('first part');
      const timer = setTimeout(() => res.end('never in time'), IDLE_MS * 3);
      res.on('close', () => clearTimeout(timer));
    } else if (url === '/reset') {
      req.socket.destroy();
    } else if (url === '/reset-mid-body') {
      res.writeHead(200);
      res.write('first part');
      setTimeout(() => req.socket.destroy(), 20);
    } else if (url === '/upload') {
      req.resume();
      req.on('end', () => res.end('got it'));
    } else {
      res.end('ok');
    }
  };
}

describe('who ended the call: HTTP/1.1 and HTTP/2 callers, HTTP/1.1 app', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: misbehaving(),
      config: (app) => ({
        inbound: { app: app.url, timeout: '10s', appProtocol: 'http1' },
        limits: { idleTimeout: `${IDLE_MS}ms`, headersTimeout: '1s', requestTimeout: '1s' },
        services: [serviceTo(app, 'orders', { protocol: 'http1' })],
      }),
    });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it.each(bothListeners(() => sc))('%s: the idle timeout firing while the app has not answered is 504 upstream.timeout, not 499', async (direction, port) => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(port());
    conn.write('GET /slow-head HTTP/1.1\r\nHost: orders\r\n\r\n');
    await conn.closed;
    await watch.refused({ reason: 'upstream.timeout', status: 504, direction: direction, upstreamHits: 1, line: { path: '/slow-head', protocol: 'HTTP/1.1' } });
  });

  it('inbound HTTP/2: a stream the idle timeout ended is 504 upstream.timeout, not 499', async () => {
    const watch = await watchRefusal(sc, [app]);
    const client = http2.connect(sc.inboundUrl);
    client.on('error', () => {});
    const stream = client.request({ ':path': '/slow-head' });
    stream.on('error', () => {});
    stream.resume();
    stream.end();
    await new Promise((resolve) => stream.once('close', resolve));
    client.destroy();
    await watch.refused({ reason: 'upstream.timeout', status: 504, direction: 'inbound', upstreamHits: 1, line: { path: '/slow-head', protocol: 'HTTP/2' } });
  });

  it('a response body that stalls past the idle timeout is logged 504 upstream.timeout, not 200 or 502', async () => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(sc.inbound.port);
    conn.write('GET /stall-body HTTP/1.1\r\nHost: orders\r\n\r\n');
    await conn.closed;
    expect(conn.text()).toMatch(/^HTTP\/1.1 200/); // the caller saw the head, then a reset: never a whole body
    expect(conn.text()).not.toMatch(/0\r\n\r\n$/);
    await watch.refused({ reason: 'upstream.timeout', status: 504, direction: 'inbound', upstreamHits: 1, line: { path: '/stall-body', protocol: 'HTTP/1.1' } });
  });

  it.each(bothListeners(() => sc))('%s: a caller that hangs up halfway through its body is 499 request.cancelled, not 502 upstream.reset', async (direction, port) => {
    const watch = await watchRefusal(sc, [app]);
    const hits = app.hits();
    const conn = await connectRaw(port());
    conn.write('POST /upload HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
    await expect.poll(() => app.hits()).toBe(hits + 1); // the app is reading the body
    conn.socket.resetAndDestroy();
    await watch.refused({ reason: 'request.cancelled', status: 499, direction: direction, upstreamHits: 1, line: { path: '/upload', protocol: 'HTTP/1.1' } });
  });

  it('a caller that stops sending its body is 408 request.timeout, not 499', async () => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(sc.inbound.port);
    conn.write('POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n\r\nonly ten b');
    await conn.closed;
    await watch.refused({ reason: 'request.timeout', status: 408, direction: 'inbound', upstreamHits: 1, line: { path: '/upload', protocol: 'HTTP/1.1' } });
  });

  it('a body trickled past limits.requestTimeout is 408 request.timeout, not 499', async () => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(sc.inbound.port);
    conn.write('POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n\r\n');
    // A byte every 100 ms: never idle for limits.idleTimeout, never done within limits.requestTimeout (1 s).
    conn.trickle(
      Array.from({ length: 100 }, () => 'x'),
      100,
    );
    const { afterMs } = await conn.closed;
    expect(afterMs).toBeGreaterThanOrEqual(1_000 - 5);
    await watch.refused({ reason: 'request.timeout', status: 408, direction: 'inbound', upstreamHits: 1, line: { path: '/upload', protocol: 'HTTP/1.1' } });
  });

  it('an app that resets before its head is 502 upstream.reset', async () => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(sc.inbound.port);
    conn.write('GET /reset HTTP/1.1\r\nHost: orders\r\n\r\n');
    const text = await conn.waitFor(/\r\n\r\n\{.*\}/);
    expect(text).toMatch(/^HTTP\/1.1 502/);
    conn.destroy();
    await watch.refused({ reason: 'upstream.reset', status: 502, direction: 'inbound', upstreamHits: 1, line: { path: '/reset', protocol: 'HTTP/1.1' } });
  });

  it('an app that resets mid-body is logged 502 upstream.reset (the caller saw 200, then a reset)', async () => {
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectRaw(sc.inbound.port);
    conn.write('GET /reset-mid-body HTTP/1.1\r\nHost: orders\r\n\r\n');
    await conn.closed;
    expect(conn.text()).toMatch(/^HTTP\/1.1 200/);
    await watch.refused({ reason: 'upstream.reset', status: 502, direction: 'inbound', upstreamHits: 1, line: { path: '/reset-mid-body', protocol: 'HTTP/1.1' } });
  });
});

describe('who ended the call: HTTP/2 caller and h2c app', () => {
  let app: http2.Http2Server;
  let sc: TestSidecar;
  let streams = 0;
  beforeAll(async () => {
    app = http2.createServer((req, res) => {
      streams++;
      req.resume();
      req.on('end', () => res.end('got it'));
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    const port = (app.address() as AddressInfo).port;
    sc = await startTestSidecar({
      inbound: { app: 'http://127.0.0.1:1' },
      limits: { idleTimeout: `${IDLE_MS * 10}ms` },
      services: [{ name: 'orders', endpoints: [{ address: `127.0.0.1:${port}` }], protocol: 'http2' }],
    });
  });
  afterAll(async () => {
    await sc?.drain(100);
    await new Promise((resolve) => app.close(resolve));
  });

  it('a caller that drops its connection mid-upload is 499 request.cancelled, not 502 upstream.reset', async () => {
    const watch = await watchRefusal(sc, [{ hits: () => streams }]);
    const before = streams;
    const client = http2.connect(sc.outboundUrl);
    client.on('error', () => {});
    const stream = client.request({ ':path': '/upload', ':method': 'POST', ':authority': 'orders' });
    stream.on('error', () => {});
    stream.write('part of a body');
    await expect.poll(() => streams).toBe(before + 1); // the app has the stream
    client.destroy();
    await watch.refused({ reason: 'request.cancelled', status: 499, direction: 'outbound', upstreamHits: 1, line: { path: '/upload', protocol: 'HTTP/2' } });
  });
});

describe('who ended the call: a body a ValidationPolicy reads', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: misbehaving(),
      policy: [policyDoc('ValidationPolicy', 'orders-input', { rules: [{ name: 'create', match: { paths: ['/orders'], methods: ['POST'] }, jsonSchema: { type: 'object' } }] })],
      config: () => ({ limits: { idleTimeout: `${IDLE_MS}ms` } }),
    });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('a caller that stops sending a body being validated is 408 request.timeout; one that leaves is 499', async () => {
    const stalledWatch = await watchRefusal(sc, [app]);
    const stalled = await connectRaw(sc.inbound.port);
    stalled.write('POST /orders HTTP/1.1\r\nHost: orders.shop\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":');
    await stalled.closed;
    // Neither body was whole: the app sees neither call.
    expect(await stalledWatch.refused({ reason: 'request.timeout', status: 408, direction: 'inbound' })).toMatchObject({ path: '/orders' });
    const leavingWatch = await watchRefusal(sc, [app]);
    const leaving = await connectRaw(sc.inbound.port);
    leaving.write('POST /orders HTTP/1.1\r\nHost: orders.shop\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":');
    // The call is in flight (its body being read) before the caller resets.
    await expect.poll(async () => (await (await request(`${sc.adminUrl}/metrics`)).body.text()).includes('meshgate_requests_in_flight{direction="inbound"} 1')).toBe(true);
    leaving.socket.resetAndDestroy();
    expect(await leavingWatch.refused({ reason: 'request.cancelled', status: 499, direction: 'inbound' })).toMatchObject({ path: '/orders' });
  });
});
