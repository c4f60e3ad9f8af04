import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAppH2cProbe } from '../../src/inbound/app-h2c-probe.ts';
import { createFakeClock } from '../helpers/fake-clock.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * inbound.appProtocol: auto with an HTTP/2 (h2c) caller. The sidecar mirrors
 * the caller's protocol only when the app speaks h2c; an HTTP/1.1-only app
 * (the common case for a plain node:http service) is sent HTTP/1.1 instead of
 * a 502.
 */

function h2Get(url: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on('error', reject);
    const stream = session.request({ ':method': 'GET', ':path': path, ':authority': 'orders' });
    let status = 0;
    let body = '';
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('end', () => {
      session.close();
      resolve({ status, body });
    });
    stream.on('error', reject);
  });
}

async function listen(server: http.Server | http2.Http2Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('HTTP/2 callers and the app protocol (auto)', () => {
  const h1App = http.createServer((req, res) => res.end(`h1 app saw HTTP/${req.httpVersion} ${req.url}`));
  const h2App = http2.createServer((req, res) => res.end(`h2 app saw HTTP/${req.httpVersion} ${req.url}`));
  let toH1: TestSidecar;
  let toH2: TestSidecar;

  beforeAll(async () => {
    toH1 = await startTestSidecar({ inbound: { app: await listen(h1App) }, log: { level: 'warn', accessLog: false } });
    toH2 = await startTestSidecar({ inbound: { app: await listen(h2App) }, log: { level: 'warn', accessLog: false } });
  });
  afterAll(async () => {
    await toH1?.drain(200);
    await toH2?.drain(200);
    h1App.closeAllConnections();
    h1App.close();
    h2App.close();
  });

  it('an h2c caller reaches an HTTP/1.1-only app over HTTP/1.1 (not a 502), every time', async () => {
    for (const path of ['/a', '/b', '/c']) {
      expect(await h2Get(toH1.inboundUrl, path)).toEqual({ status: 200, body: `h1 app saw HTTP/1.1 ${path}` });
    }
  });

  it('an h2c caller of an app that speaks h2c still gets HTTP/2 end to end', async () => {
    expect(await h2Get(toH2.inboundUrl, '/x')).toEqual({ status: 200, body: 'h2 app saw HTTP/2.0 /x' });
  });

  it('asks the app once, keeps the answer for a minute, then asks again', async () => {
    let connections = 0;
    h1App.on('connection', () => connections++);
    const clock = createFakeClock();
    const probe = createAppH2cProbe(`http://127.0.0.1:${(h1App.address() as AddressInfo).port}`, { clock });
    const first = probe.speaksH2c();
    expect(first).toBeInstanceOf(Promise);
    expect(probe.speaksH2c()).toBe(first); // callers during the probe share it
    expect(await first).toBe(false);
    expect(probe.speaksH2c()).toBe(false); // cached: answered synchronously
    expect(connections).toBe(1);
    clock.advance(60_000);
    expect(await probe.speaksH2c()).toBe(false);
    expect(connections).toBe(2);
    const h2 = createAppH2cProbe(`http://127.0.0.1:${(h2App.address() as AddressInfo).port}`, { clock });
    expect(await h2.speaksH2c()).toBe(true);
  });
});
