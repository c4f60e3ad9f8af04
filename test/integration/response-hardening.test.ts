import type http from 'node:http';
import http2 from 'node:http2';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import { connectRaw } from '../helpers/raw-socket.ts';
import { policyDoc } from '../helpers/static-policy.ts';

/*
 * Issue #15, response hardening per Route `responses` rule, through a real
 * sidecar in front of a real app: revealing headers stripped, the route's
 * security headers added (the app's own kept unless override), and a
 * response over the cap refused (Content-Length) or cut off (streamed), each
 * logged and counted once with response.too_large.
 */

const CAP = 1024;

/** `/streamed-big` sends its second part only once the test calls the function this sets. */
const streamed: { sendRest?: () => void } = {};

function revealingApp(): http.RequestListener {
  return (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const revealing = { server: 'Apache/2.4.1 (Unix)', 'x-powered-by': 'PHP/5.6', 'x-aspnet-version': '4.0.30319', 'x-runtime': '0.02', 'x-debug-token': 'abc', 'content-type': 'text/plain' };
    switch (path) {
      case '/page':
        res.writeHead(200, revealing);
        return res.end('page');
      case '/own-csp':
        res.writeHead(200, { ...revealing, 'content-security-policy': "default-src 'none'" });
        return res.end('own');
      case '/declared-big':
        res.writeHead(200, { 'content-length': String(CAP + 1) });
        return res.end(Buffer.alloc(CAP + 1, 'a'));
      case '/streamed-big':
        // No Content-Length: the size only shows as the body streams.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.write(Buffer.alloc(CAP / 2, 'a'));
        streamed.sendRest = () => res.end(Buffer.alloc(CAP, 'b'));
        return;
      case '/at-cap':
        res.writeHead(200);
        return res.end(Buffer.alloc(CAP, 'c'));
      default:
        res.writeHead(404, revealing);
        return res.end();
    }
  };
}

describe('response hardening (Route responses[].hardening)', () => {
  let pair: AppAndSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: revealingApp(),
      policy: [
        policyDoc('Route', 'orders', {
          service: 'orders',
          responses: [
            {
              name: 'override',
              match: { paths: ['/own-csp'], methods: ['GET'] },
              hardening: { securityHeaders: { 'Content-Security-Policy': "default-src 'self'" }, overrideSecurityHeaders: true },
            },
            {
              name: 'site',
              hardening: {
                stripHeaders: ['X-Debug-Token'],
                maxResponseBytes: CAP,
                securityHeaders: {
                  'strict-transport-security': 'max-age=63072000; includeSubDomains',
                  'x-content-type-options': 'nosniff',
                  'content-security-policy': "default-src 'self'",
                  'referrer-policy': 'no-referrer',
                },
              },
            },
          ],
        }),
      ],
    });
  });
  afterAll(async () => {
    await pair?.close();
  });

  const get = async (path: string) => {
    const res = await request(`${pair.sc.inboundUrl}${path}`, { headers: { host: 'orders.shop' } });
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
  };
  const metrics = async () => parsePrometheusText(await (await request(`${pair.sc.adminUrl}/metrics`)).body.text());

  it('strips the headers that reveal the server and framework, default and listed', async () => {
    const res = await get('/page');
    expect(res).toMatchObject({ status: 200, body: 'page' });
    for (const name of ['server', 'x-powered-by', 'x-aspnet-version', 'x-runtime', 'x-debug-token']) expect(res.headers[name], name).toBeUndefined();
    expect(res.headers['content-type']).toBe('text/plain');
  });

  it("adds the route's security headers, keeping the app's own unless the route overrides them", async () => {
    const res = await get('/page');
    expect(res.headers).toMatchObject({
      'strict-transport-security': 'max-age=63072000; includeSubDomains',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'",
      'referrer-policy': 'no-referrer',
    });
    // The same on the app's errors.
    expect((await get('/nothing-here')).headers).toMatchObject({ 'x-content-type-options': 'nosniff' });
    expect((await get('/nothing-here')).headers.server).toBeUndefined();
    // The override rule replaces the app's value; its default strip list applies too.
    const own = await get('/own-csp');
    expect(own.headers['content-security-policy']).toBe("default-src 'self'");
    expect(own.headers['x-powered-by']).toBeUndefined();
  });

  it('hardens HTTP/2 responses the same way', async () => {
    const client = http2.connect(pair.sc.inboundUrl);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = client.request({ ':path': '/page', ':authority': 'orders.shop' });
        stream.on('response', (h) => {
          stream.resume();
          stream.on('end', () => resolve(h));
        });
        stream.on('error', reject);
        stream.end();
      });
      expect(headers[':status']).toBe(200);
      expect(headers.server).toBeUndefined();
      expect(headers['x-powered-by']).toBeUndefined();
      expect(headers['x-content-type-options']).toBe('nosniff');
    } finally {
      client.close();
    }
  });

  it('relays a body exactly at the cap', async () => {
    const res = await get('/at-cap');
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(CAP);
  });

  it('answers 502 response.too_large when Content-Length is over the cap, logged and counted once', async () => {
    const before = sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' });
    const res = await get('/declared-big');
    expect(res.status).toBe(502);
    expect(res.headers['x-meshgate-reason']).toBe('response.too_large');
    expect(JSON.parse(res.body)).toMatchObject({ code: 'response.too_large' });
    expect(pair.sc.logs.filter((l) => l.path === '/declared-big' && l.reason === 'response.too_large')).toHaveLength(1);
    expect(sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' }) - before).toBe(1);
  });

  it('cuts off a body that grows past the cap while streaming: the caller is reset, logged and counted once', async () => {
    const before = sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' });
    const conn = await connectRaw(pair.sc.inbound.port);
    conn.write('GET /streamed-big HTTP/1.1\r\nHost: orders.shop\r\n\r\n');
    await conn.waitFor(/a{512}/); // the head and the first part went out: the cap can only show later
    streamed.sendRest!();
    const closed = await conn.closed;
    // The connection ends before the last chunk: the caller cannot take the part it got for a whole body.
    expect(closed.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(closed.text).not.toMatch(/\r\n0\r\n\r\n$/);
    expect(closed.text).not.toContain('b'.repeat(16));
    const lines = pair.sc.logs.filter((l) => l.path === '/streamed-big' && l.protocol === 'HTTP/1.1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ status: 502, reason: 'response.too_large' });
    expect(sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' }) - before).toBe(1);
  });

  it('resets an HTTP/2 stream whose body grows past the cap, and only that stream', async () => {
    const before = sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' });
    const client = http2.connect(pair.sc.inboundUrl);
    try {
      const outcome = await new Promise<{ status: number | undefined; received: number; error: string | undefined }>((resolve) => {
        const stream = client.request({ ':path': '/streamed-big', ':authority': 'orders.shop' });
        let status: number | undefined;
        let received = 0;
        stream.on('response', (h) => (status = h[':status']));
        stream.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received >= CAP / 2) streamed.sendRest?.(); // the first part arrived: now the app sends the rest
        });
        stream.on('error', (err: Error & { code?: string }) => resolve({ status, received, error: `${err.code} rst ${stream.rstCode}` }));
        // A reset with NO_ERROR would read as a whole body: the caller must see an error code.
        stream.on('close', () => resolve({ status, received, error: stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? undefined : `rst ${stream.rstCode}` }));
        stream.end();
      });
      expect(outcome.status).toBe(200);
      expect(outcome.received).toBeLessThanOrEqual(CAP);
      expect(outcome.error).toBe(`ERR_HTTP2_STREAM_ERROR rst ${http2.constants.NGHTTP2_INTERNAL_ERROR}`);
      // The connection still serves other calls.
      const next = await new Promise<number | undefined>((resolve, reject) => {
        const stream = client.request({ ':path': '/page', ':authority': 'orders.shop' });
        stream.on('response', (h) => resolve(h[':status']));
        stream.on('error', reject);
        stream.resume();
        stream.end();
      });
      expect(next).toBe(200);
    } finally {
      client.close();
    }
    const lines = pair.sc.logs.filter((l) => l.path === '/streamed-big' && l.protocol === 'HTTP/2');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ status: 502, reason: 'response.too_large' });
    expect(sumOf(await metrics(), 'meshgate_requests_total', { reason: 'response.too_large' }) - before).toBe(1);
  });
});
