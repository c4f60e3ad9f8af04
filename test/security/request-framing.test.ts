import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { bothListeners, serviceTo, startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { connectRaw } from '../helpers/raw-socket.ts';
import type { TestServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, defect 4: request heads that two parsers could read two ways are
 * refused, never re-serialized and passed on. Each case is sent with a canary
 * request behind it on the same connection: the canary gets its own answer
 * (connection kept) or none (connection closed), never the refused request's.
 */

const CANARY = 'GET /canary HTTP/1.1\r\nHost: orders\r\n\r\n';

interface Reply {
  readonly status: number;
  readonly headers: string;
  readonly body: string;
}

/** Splits raw HTTP/1.1 replies (content-length or chunked bodies). */
function replies(text: string): Reply[] {
  const out: Reply[] = [];
  let rest = text;
  while (rest.startsWith('HTTP/1.1 ')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    const headers = rest.slice(0, headEnd);
    let body = '';
    let next = headEnd + 4;
    const length = /content-length: (\d+)/i.exec(headers);
    if (length) {
      body = rest.slice(next, next + Number(length[1]));
      next += Number(length[1]);
    } else if (/transfer-encoding: chunked/i.test(headers)) {
      for (;;) {
        const eol = rest.indexOf('\r\n', next);
        const size = parseInt(rest.slice(next, eol), 16);
        next = eol + 2 + size + 2;
        if (!size) break;
        body += rest.slice(eol + 2, eol + 2 + size);
      }
    }
    out.push({ status: Number(headers.slice(9, 12)), headers, body });
    rest = rest.slice(next);
  }
  return out;
}

/** Sends `payload` then the canary in one write; resolves with every reply once the server closed or both were answered. */
async function sendWithCanary(port: number, payload: string): Promise<{ replies: Reply[]; closed: boolean }> {
  const conn = await connectRaw(port);
  conn.write(payload + CANARY);
  const closedOrBoth = await Promise.race([
    conn.closed.then(() => true),
    conn.waitFor(/"url":"\/canary"/).then(
      () => false,
      () => true,
    ),
  ]);
  const text = conn.text();
  conn.destroy();
  return { replies: replies(text), closed: closedOrBoth };
}

describe('request framing: HTTP/1.1 on both listeners', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({ config: (app) => ({ services: [serviceTo(app)] }) });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });
  const listeners = bothListeners(() => sc);

  describe.each(listeners)('%s', (direction, port) => {
    it.each([
      ['two Host headers', 'GET / HTTP/1.1\r\nHost: orders\r\nHost: evil.example\r\n\r\n'],
      ['one Host header holding two values', 'GET / HTTP/1.1\r\nHost: orders, evil.example\r\n\r\n'],
      ['a Host with a space', 'GET / HTTP/1.1\r\nHost: orders evil.example\r\n\r\n'],
    ])('%s: 400 request.malformed without echoing the value, canary answered on its own', async (_case, payload) => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got } = await sendWithCanary(port(), payload);
      expect(got.map((r) => r.status)).toEqual([400, 200]);
      expect(got[0]!.headers).toContain('x-meshgate-reason: request.malformed');
      const body = JSON.parse(got[0]!.body) as { code: string; reason: string };
      expect(body.code).toBe('request.malformed');
      expect(body.reason).not.toMatch(/evil|orders/);
      expect(JSON.parse(got[1]!.body)).toMatchObject({ url: '/canary', headers: { host: 'orders' } });
      const line = await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: 1 }); // the canary only
      expect(line).toMatchObject({ authority: '-', path: '-' });
    });

    it.each([
      ['two spaces before the target', 'GET  /x HTTP/1.1\r\nHost: orders\r\n\r\n'],
      ['two spaces before the version', 'GET /x  HTTP/1.1\r\nHost: orders\r\n\r\n'],
      ['a tab for a space', 'GET\t/x HTTP/1.1\r\nHost: orders\r\n\r\n'],
    ])('request line with %s: 400 request.malformed, connection closed, canary never answered', async (_case, payload) => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got, closed } = await sendWithCanary(port(), payload);
      expect(closed).toBe(true);
      expect(got.map((r) => r.status)).toEqual([400]);
      expect(JSON.parse(got[0]!.body)).toMatchObject({ code: 'request.malformed' });
      await watch.refused({ reason: 'request.malformed', status: 400, direction });
    });

    it.each([
      // Node's parser was strict about these on the first request line only; every request is read by meshgate's own now.
      ['a second request line with two spaces, after a clean request', 'GET /first HTTP/1.1\r\nHost: orders\r\n\r\nGET  /x HTTP/1.1\r\nHost: orders\r\n\r\n', [200, 400], 1],
      ['a header line ended by a bare LF', 'GET /x HTTP/1.1\r\nHost: orders\nX-Hidden: 1\r\n\r\n', [400], 0],
      ['Content-Length twice with the same value', 'POST /x HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello', [400], 0],
      ['a transfer coding before chunked', 'POST /x HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', [400], 0],
    ] as const)('%s: 400 request.malformed, connection closed, canary never answered', async (_case, payload, statuses, hits) => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got, closed } = await sendWithCanary(port(), payload);
      expect(closed).toBe(true);
      expect(got.map((r) => r.status)).toEqual(statuses);
      expect(JSON.parse(got.at(-1)!.body)).toMatchObject({ code: 'request.malformed' });
      await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: hits });
    });

    it('CONNECT: 501 request.unsupported (meshgate opens no tunnels), connection closed, canary never answered', async () => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got, closed } = await sendWithCanary(port(), 'CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\n\r\n');
      expect(closed).toBe(true);
      expect(got.map((r) => r.status)).toEqual([501]);
      expect(got[0]!.headers).toContain('x-meshgate-reason: request.unsupported');
      await watch.refused({ reason: 'request.unsupported', status: 501, direction });
    });

    it('a missing Host gets the JSON reason body like every other 400', async () => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got } = await sendWithCanary(port(), 'GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n');
      expect(got.map((r) => r.status)).toEqual([400, 200]);
      expect(got[0]!.headers).toContain('x-meshgate-reason: request.malformed');
      expect(JSON.parse(got[0]!.body)).toMatchObject({ code: 'request.malformed', reason: 'missing authority (Host header)' });
      await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: 1 }); // the canary only
    });

    it('a head the parser refuses is answered without parser internals in the reason', async () => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got, closed } = await sendWithCanary(port(), 'GET / HTTP/1.1\r\nHost: orders\r\nBad Name: x\r\n\r\n');
      expect(closed).toBe(true);
      expect(got.map((r) => r.status)).toEqual([400]);
      expect(got[0]!.body).not.toMatch(/HPE_|ERR_/);
      expect(JSON.parse(got[0]!.body)).toMatchObject({ code: 'request.malformed' });
      await watch.refused({ reason: 'request.malformed', status: 400, direction });
    });

    it('more header fields than limits.maxHeadersCount (100): 431 request.headers_too_large, the connection closed, the canary behind it never read', async () => {
      const watch = await watchRefusal(sc, [app]);
      // Host and 100 more: one past the limit is refused as a head too large is (it was not node's parser's from two past it).
      const fields = Array.from({ length: 100 }, (_, i) => `X-F${i}: v\r\n`).join('');
      const { replies: got, closed } = await sendWithCanary(port(), `GET /x HTTP/1.1\r\nHost: orders\r\n${fields}\r\n`);
      expect(closed).toBe(true);
      expect(got.map((r) => r.status)).toEqual([431]);
      expect(got[0]!.headers).toContain('x-meshgate-reason: request.headers_too_large');
      expect(JSON.parse(got[0]!.body)).toMatchObject({ code: 'request.headers_too_large' });
      await watch.refused({ reason: 'request.headers_too_large', status: 431, direction, upstreamHits: 0 });
    });

    it('OPTIONS * gets a defined answer: 501 request.unsupported, canary answered on its own', async () => {
      const watch = await watchRefusal(sc, [app]);
      const { replies: got } = await sendWithCanary(port(), 'OPTIONS * HTTP/1.1\r\nHost: orders\r\n\r\n');
      expect(got.map((r) => r.status)).toEqual([501, 200]);
      expect(JSON.parse(got[0]!.body)).toMatchObject({ code: 'request.unsupported' });
      await watch.refused({ reason: 'request.unsupported', status: 501, direction, upstreamHits: 1, line: { method: 'OPTIONS' } });
    });
  });

  it("outbound: an unknown destination is 404 without the caller's Host in the reason", async () => {
    const watch = await watchRefusal(sc, [app]);
    const { replies: got } = await sendWithCanary(sc.outbound.port, 'GET / HTTP/1.1\r\nHost: nosuch-service\r\n\r\n');
    expect(got.map((r) => r.status)).toEqual([404, 200]);
    expect(JSON.parse(got[0]!.body).reason).not.toContain('nosuch');
    await watch.refused({ reason: 'route.not_found', status: 404, direction: 'outbound', upstreamHits: 1 }); // the canary only
  });

  it('HTTP/2: a Host header that differs from :authority is refused', async () => {
    const watch = await watchRefusal(sc, [app]);
    const client = http2.connect(sc.inboundUrl);
    try {
      const stream = client.request({ ':path': '/', ':authority': 'orders', host: 'evil.example' });
      stream.end();
      const [headers, body] = await new Promise<[http2.IncomingHttpHeaders, string]>((resolve, reject) => {
        let text = '';
        let head: http2.IncomingHttpHeaders = {};
        stream.on('response', (h) => (head = h));
        stream.on('data', (c: Buffer) => (text += c.toString()));
        stream.on('end', () => resolve([head, text]));
        stream.on('error', reject);
      });
      expect(headers[':status']).toBe(400);
      expect(JSON.parse(body)).toMatchObject({ code: 'request.malformed' });
      expect(JSON.parse(body).reason).not.toContain('evil');
      await watch.refused({ reason: 'request.malformed', status: 400, direction: 'inbound', line: { protocol: 'HTTP/2' } });
    } finally {
      client.close();
    }
  });
});

describe('request framing over TLS (edge listener)', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({ edge: true });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('a request line with two spaces is refused, the canary behind it never answered; a clean one is served', async () => {
    const watch = await watchRefusal(sc, [app]);
    const bad = await connectRaw(sc.edge!.port, { ALPNProtocols: ['http/1.1'] });
    bad.write(`GET  /x HTTP/1.1\r\nHost: orders\r\n\r\n${CANARY}`);
    const { text } = await bad.closed;
    expect(replies(text).map((r) => r.status)).toEqual([400]);
    await watch.refused({ reason: 'request.malformed', status: 400, direction: 'inbound' }); // edge refusals count as inbound
    const hits = app.hits();
    const good = await connectRaw(sc.edge!.port, { ALPNProtocols: ['http/1.1'] });
    good.write(CANARY);
    await good.waitFor(/"url":"\/canary"/);
    good.destroy();
    expect(app.hits()).toBe(hits + 1);
  });
});
