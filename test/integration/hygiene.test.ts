import net from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { serviceTo, startAppAndSidecar } from '../helpers/app-sidecar.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/** Sends raw bytes and returns everything the server wrote until it closed or went quiet. */
function raw(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let out = '';
    socket.setTimeout(2000, () => socket.end());
    socket.on('data', (d) => {
      out += d.toString('latin1');
      if (/\r\n\r\n/.test(out) && /content-length: (\d+)/i.test(out)) {
        const length = Number(/content-length: (\d+)/i.exec(out)![1]);
        if (out.length - out.indexOf('\r\n\r\n') - 4 >= length) socket.end();
      }
    });
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
    socket.write(payload);
  });
}

/** The body of a raw HTTP/1.1 reply, de-chunked when needed. */
function bodyOf(reply: string): string {
  const start = reply.indexOf('\r\n\r\n') + 4;
  if (!/transfer-encoding: chunked/i.test(reply.slice(0, start))) return reply.slice(start);
  let out = '';
  let rest = reply.slice(start);
  for (;;) {
    const eol = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, eol), 16);
    if (!size) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 4 + size);
  }
}

describe('header hygiene and hardening', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({ config: (app) => ({ limits: { maxHeadersCount: 20 }, services: [serviceTo(app)] }) });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('removes hop-by-hop headers and those named in Connection, keeps the caller request id', async () => {
    const reply = await raw(
      sc.outbound.port,
      'GET / HTTP/1.1\r\nHost: orders\r\nConnection: close, x-internal-secret\r\nX-Internal-Secret: do-not-forward\r\n' +
        'Proxy-Authorization: Basic abc\r\nKeep-Alive: timeout=5\r\nX-Request-Id: abc-123\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n',
    );
    const seen = JSON.parse(bodyOf(reply)) as { headers: Record<string, string> };
    expect(seen.headers['x-internal-secret']).toBeUndefined();
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers['x-request-id']).toBe('abc-123');
    expect(seen.headers['x-forwarded-for']).toBe('10.1.2.3, 127.0.0.1');
    expect(seen.headers.forwarded).toBe('for=127.0.0.1;proto=http');
  });

  it("forwards an upload sent with Expect: 100-continue (curl's default above 1 KiB): the caller gets 100 from the sidecar, the app the whole body", async () => {
    const body = 'a'.repeat(3000);
    const socket = net.connect(sc.outbound.port, '127.0.0.1');
    let reply = '';
    let sent = false;
    socket.on('data', (d) => {
      reply += d.toString('latin1');
      // Sends the body only once told to continue, as curl does.
      if (reply.startsWith('HTTP/1.1 100') && !sent) {
        sent = true;
        socket.write(body);
      }
    });
    socket.write(`POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
    await new Promise((resolve) => socket.on('close', resolve));
    expect(reply).toMatch(/^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200 /);
    const seen = JSON.parse(bodyOf(reply.slice(reply.indexOf('HTTP/1.1 200')))) as { headers: Record<string, string>; bytes: number };
    expect(seen.bytes).toBe(3000);
    expect(seen.headers.expect).toBeUndefined(); // answered by the sidecar, not asked again of the app
  });

  it('accepts absolute-form requests (HTTP proxy mode)', async () => {
    const reply = await raw(sc.outbound.port, 'GET http://orders.default/p?q=1 HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1.1 200/);
    const body = JSON.parse(bodyOf(reply)) as { url: string; headers: Record<string, string> };
    expect(body.url).toBe('/p?q=1');
    expect(body.headers.host).toBe('orders.default');
  });

  it('refuses too many header fields with 431 and a reason code', async () => {
    const headers: Record<string, string> = { host: 'orders' };
    for (let i = 0; i < 25; i++) headers[`x-h${i}`] = 'v';
    const res = await request(`${sc.outboundUrl}/`, { headers });
    expect(res.statusCode).toBe(431);
    expect(await res.body.json()).toMatchObject({ code: 'request.headers_too_large' });
  });

  it('answers an unparseable request with 400 and a reason code, closes only that connection', async () => {
    const before = app.hits();
    const reply = await raw(sc.inbound.port, 'GET nothing-here HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect(reply).toContain('"code":"request.malformed"');
    expect(reply).not.toContain('/ok'); // nothing after a parse error is trusted
    expect(app.hits()).toBe(before);
    const next = await request(`${sc.inboundUrl}/ok`);
    expect(next.statusCode).toBe(200);
    await next.body.dump();
  });

  it('answers an invalid method token with 400 request.malformed', async () => {
    const reply = await raw(sc.inbound.port, 'G@T / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect(reply).toContain('request.malformed');
  });

  it('rejects an oversized request head (431) without reaching the app', async () => {
    const before = app.hits();
    const res = await request(`${sc.inboundUrl}/`, { headers: { 'x-big': 'a'.repeat(20_000) } }).catch((e: Error) => e);
    if (!(res instanceof Error)) expect(res.statusCode).toBe(431);
    expect(app.hits()).toBe(before);
  });

  it('never uses the lenient HTTP parser: conflicting Content-Length and Transfer-Encoding is refused', async () => {
    const before = app.hits();
    const reply = await raw(sc.inbound.port, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect(reply).not.toContain('/smuggled');
    expect(app.hits()).toBe(before);
  });
});

describe('admin endpoints', () => {
  it('/live, /ready (503 while the app is down), /metrics, /config_dump', async () => {
    const app = await startHttpServer(echoHandler('app'));
    const sc = await startTestSidecar({ inbound: { app: app.url } });
    try {
      expect((await request(`${sc.adminUrl}/live`)).statusCode).toBe(200);
      const ready = await request(`${sc.adminUrl}/ready`);
      expect(ready.statusCode).toBe(200);
      expect(await ready.body.json()).toMatchObject({ ready: true, checks: { app: 'ok' } });
      await request(`${sc.inboundUrl}/x`).then((r) => r.body.dump());
      const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
      expect(metrics).toMatch(/meshgate_requests_total\{direction="inbound",source_principal="",destination_service="test.default",response_code="200",reason=""\} 1/);
      expect(metrics).toContain('meshgate_request_duration_seconds_bucket');
      expect(metrics).toMatch(/meshgate_requests_in_flight\{direction="inbound"\} 0/);
      const dump = (await (await request(`${sc.adminUrl}/config_dump`)).body.json()) as Record<string, unknown>;
      expect(dump).toMatchObject({ workload: { service: 'test', namespace: 'default' }, policy: { source: 'none' }, certificate: null });
      await app.close();
      const down = await request(`${sc.adminUrl}/ready`);
      expect(down.statusCode).toBe(503);
      expect(((await down.body.json()) as { checks: { app: string } }).checks.app).toMatch(/unreachable/);
    } finally {
      await sc.drain(200);
    }
  });
});
