import http2 from 'node:http2';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { connectRaw } from '../helpers/raw-socket.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { policyDoc } from '../helpers/static-policy.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, oversized and deeply nested bodies: a body the sidecar must
 * bound (a ValidationPolicy's maxBodyBytes, limits.maxBodyBuffer) or parse (a
 * jsonSchema) cannot cost it more than the limit, its stack or its event
 * loop, and is refused with a reason before the app sees a byte. Heads over
 * the header limits are 431. Each case: what the caller saw, one log line,
 * one counter, the app untouched.
 */

const H = 'Host: orders.shop\r\n';

/** `depth` objects inside each other, the innermost empty. */
const nested = (depth: number): string => '{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);

function post(route: string, body: string, type = 'application/json'): string {
  return `POST ${route} HTTP/1.1\r\n${H}Content-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

describe('bodies and heads over the limits', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    // A schema that refers to itself is checked level by level: the nesting attack's target.
    const tree = { $ref: '#/$defs/node', $defs: { node: { type: 'object', additionalProperties: { $ref: '#/$defs/node' } } } };
    pair = await startAppAndSidecar({
      app: echoHandler('orders'),
      policy: [
        policyDoc('ValidationPolicy', 'orders-input', {
          selector: { services: ['orders'] },
          rules: [
            { name: 'upload', match: { paths: ['/upload'], methods: ['POST'] }, maxBodyBytes: '64KiB' },
            // The deepest and widest a rule may allow, so the schema itself is what these cases push.
            { name: 'tree', match: { paths: ['/tree'], methods: ['POST'] }, jsonSchema: tree, json: { maxDepth: 1000 } },
            { name: 'bulk', match: { paths: ['/bulk'], methods: ['POST'] }, jsonSchema: { type: 'object', additionalProperties: { type: 'string' } }, json: { maxObjectMembers: 1_000_000 } },
            // The safe-JSON defaults (depth 64, 1000 members, 10 000 items) in front of a quadratic schema keyword.
            { name: 'orders', match: { paths: ['/orders'], methods: ['POST'] }, jsonSchema: { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } } },
            { name: 'search', match: { paths: ['/search'] }, injection: {} },
          ],
        }),
      ],
      config: () => ({ limits: { maxBodyBuffer: '4MiB', maxHeadersCount: 50, maxHeaderSize: 8192 } }),
    });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });

  /** Sends `payload` on a new connection; resolves with the reply once the sidecar closed the connection or answered with a JSON body. */
  async function send(payload: string) {
    const conn = await connectRaw(sc.inbound.port);
    conn.write(payload);
    const text = await Promise.race([conn.waitFor(/\r\n\r\n\{.*\}$/s), conn.closed.then((c) => c.text)]);
    return { conn, text, status: Number(text.slice(9, 12)), reason: /x-meshgate-reason: (\S+)/i.exec(text)?.[1] };
  }

  /** The slowest of /ready answers asked every 20 ms while `during` runs. */
  async function readyWhile(during: Promise<unknown>): Promise<number> {
    let done = false;
    void during.finally(() => (done = true));
    let slowest = 0;
    while (!done) {
      const started = performance.now();
      const res = await request(`${sc.adminUrl}/ready`, { signal: AbortSignal.timeout(5_000) });
      await res.body.dump();
      slowest = Math.max(slowest, performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 20)); // the pace of the questions, not a wait for a state
    }
    await during;
    return slowest;
  }

  it('a Content-Length over maxBodyBytes: 413 validate.body_too_large before a body byte is sent, connection closed', async () => {
    const watch = await watchRefusal(sc, [app]);
    const { conn, status, reason, text } = await send(`POST /upload HTTP/1.1\r\n${H}Content-Length: 10000000\r\n\r\n`); // the head only
    expect({ status, reason }).toEqual({ status: 413, reason: 'validate.body_too_large' });
    expect(text).toMatch(/connection: close/i);
    await conn.closed;
    await watch.refused({ reason: 'validate.body_too_large', status: 413, direction: 'inbound' });
  });

  it('a chunked body that grows past maxBodyBytes mid-stream: 413 once the limit is crossed, the rest never read', async () => {
    const watch = await watchRefusal(sc, [app]);
    const chunk = `4000\r\n${'x'.repeat(0x4000)}\r\n`;
    const conn = await connectRaw(sc.inbound.port);
    conn.write(`POST /upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`);
    // 16 KiB at a time, never the last chunk: the sidecar must stop on its own count.
    conn.trickle(
      Array.from({ length: 64 }, () => chunk),
      5,
    );
    const text = await conn.waitFor(/\r\n\r\n\{.*\}$/s);
    expect(text).toMatch(/^HTTP\/1.1 413 .*x-meshgate-reason: validate.body_too_large/s);
    await conn.closed;
    await watch.refused({ reason: 'validate.body_too_large', status: 413, direction: 'inbound' });
  });

  it('a JSON body nested 10 000 deep on a self-referring schema: 400 validate.json_too_deep, no stack overflow; /ready answers meanwhile', async () => {
    const watch = await watchRefusal(sc, [app]);
    const sent = send(post('/tree', nested(10_000)));
    const slowest = await readyWhile(sent);
    const { status, reason, text } = await sent;
    expect({ status, reason }).toEqual({ status: 400, reason: 'validate.json_too_deep' });
    expect(text).toContain('request body nests JSON deeper than 1000 levels');
    expect(slowest).toBeLessThan(1_000);
    await watch.refused({ reason: 'validate.json_too_deep', status: 400, direction: 'inbound' });
  });

  it('a JSON body nested 1 000 deep (the limit) is checked against the schema and reaches the app', async () => {
    const hits = app.hits();
    const body = nested(1_000);
    const res = await request(`${sc.inboundUrl}/tree`, { method: 'POST', headers: { host: 'orders.shop', 'content-type': 'application/json' }, body });
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ url: '/tree', bytes: body.length });
    expect(app.hits()).toBe(hits + 1);
  });

  it('a JSON body with 100 000 keys: refused with the first failing pointer, /ready within 1 s meanwhile', async () => {
    const body = '{' + Array.from({ length: 100_000 }, (_, i) => `"k${i}":${i}`).join(',') + '}';
    const watch = await watchRefusal(sc, [app]);
    const sent = send(post('/bulk', body));
    const slowest = await readyWhile(sent);
    const { status, reason, text } = await sent;
    expect({ status, reason }).toEqual({ status: 400, reason: 'validate.schema' });
    expect(text).toContain('JSON body at /k0: must be string');
    expect(slowest).toBeLessThan(1_000);
    await watch.refused({ reason: 'validate.schema', status: 400, direction: 'inbound' });
  });

  it('a JSON bomb of 500 000 items on a uniqueItems schema: 400 validate.json_too_many_members before the schema runs; /ready within 1 s', async () => {
    const watch = await watchRefusal(sc, [app]);
    const sent = send(post('/orders', `{"items":[${'0,'.repeat(499_999)}0]}`));
    const slowest = await readyWhile(sent);
    const { status, reason, text } = await sent;
    expect({ status, reason }).toEqual({ status: 400, reason: 'validate.json_too_many_members' });
    expect(text).toContain('request body has an array with more than 10000 items');
    expect(slowest).toBeLessThan(1_000);
    await watch.refused({ reason: 'validate.json_too_many_members', status: 400, direction: 'inbound' });
  });

  it.each([
    ['a repeated key (the app would read the last "role")', '{"items":[],"role":"user","role":"admin"}', 'validate.json_duplicate_key'],
    ['an id past 2^53 (the app would read another id)', '{"items":[],"id":9007199254740993}', 'validate.json_unsafe_number'],
    ['an escaped lone surrogate', '{"items":["\\ud800"]}', 'validate.json_invalid_utf8'],
  ])('%s: 400 with its own code, the app untouched', async (_case, body, code) => {
    const watch = await watchRefusal(sc, [app]);
    const { status, reason } = await send(post('/orders', body));
    expect({ status, reason }).toEqual({ status: 400, reason: code });
    await watch.refused({ reason: code, status: 400, direction: 'inbound' });
  });

  it.each([
    ['SQL injection in the query', `GET /search?q=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\n${H}\r\n`],
    ['a script tag in a form body', post('/search', 'q=%3Cscript%3Ealert(1)%3C%2Fscript%3E', 'application/x-www-form-urlencoded')],
    ['path traversal, double-encoded, in a JSON string', post('/search', '{"file":"..%252f..%252f..%252fetc%252fpasswd"}')],
  ])('%s: 403 validate.injection, the app untouched', async (_case, payload) => {
    const watch = await watchRefusal(sc, [app]);
    const { status, reason, text } = await send(payload);
    expect({ status, reason }).toEqual({ status: 403, reason: 'validate.injection' });
    expect(text).not.toMatch(/script|passwd|OR/);
    await watch.refused({ reason: 'validate.injection', status: 403, direction: 'inbound' });
  });

  it.each([
    ['more header fields than limits.maxHeadersCount', Array.from({ length: 80 }, (_, i) => `x-h${i}: 1\r\n`).join('')],
    ['a head larger than limits.maxHeaderSize', `x-big: ${'b'.repeat(10_000)}\r\n`],
  ])('%s: 431 request.headers_too_large, connection closed', async (_case, extra) => {
    const watch = await watchRefusal(sc, [app]);
    const { conn, status, reason } = await send(`GET / HTTP/1.1\r\n${H}${extra}\r\n`);
    expect({ status, reason }).toEqual({ status: 431, reason: 'request.headers_too_large' });
    await conn.closed;
    await watch.refused({ reason: 'request.headers_too_large', status: 431, direction: 'inbound' });
  });

  it('a chunk-size line beyond 4 KiB (`1;aaaa...`, 20 000 bytes of extension) on a call in flight: 400 request.malformed, logged once by the call', async () => {
    const watch = await watchRefusal(sc, [app]);
    const { conn, status, reason } = await send(`POST /upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`);
    expect({ status, reason }).toEqual({ status: 400, reason: 'request.malformed' });
    await conn.closed;
    // Was two lines: the listener's 400 and the call's 499 request.cancelled.
    await watch.refused({ reason: 'request.malformed', status: 400, direction: 'inbound', line: { path: '/upload' } });
    expect(watch.logsSince().filter((l) => l.log === 'access')).toHaveLength(1);
  });

  it('100 000 one-byte chunks with extensions (`1;a=b`): counted by their data, 413 once maxBodyBytes is crossed', async () => {
    const watch = await watchRefusal(sc, [app]);
    const { conn, status, reason } = await send(`POST /upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n` + '1;a=bbbbbbbb\r\nx\r\n'.repeat(100_000) + '0\r\n\r\n');
    expect({ status, reason }).toEqual({ status: 413, reason: 'validate.body_too_large' });
    await conn.closed;
    await watch.refused({ reason: 'validate.body_too_large', status: 413, direction: 'inbound' });
  });

  describe('over HTTP/2', () => {
    async function h2Stream(headers: http2.OutgoingHttpHeaders) {
      const session = http2.connect(sc.inboundUrl);
      session.on('error', () => {});
      const stream = session.request({ ':method': 'POST', ':authority': 'orders.shop', ...headers }, { endStream: false });
      stream.on('error', () => {});
      let status: number | undefined;
      let body = '';
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', (c: Buffer) => (body += c.toString()));
      const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
      return { session, stream, closed, status: () => status, body: () => body };
    }

    it('a content-length over maxBodyBytes: 413 validate.body_too_large on the stream before any DATA', async () => {
      const watch = await watchRefusal(sc, [app]);
      const call = await h2Stream({ ':path': '/upload', 'content-length': '10000000' });
      await call.closed;
      call.session.close();
      expect(call.status()).toBe(413);
      expect(JSON.parse(call.body())).toMatchObject({ code: 'validate.body_too_large' });
      await watch.refused({ reason: 'validate.body_too_large', status: 413, direction: 'inbound' });
    });

    it('DATA beyond the declared content-length: the connection is closed (GOAWAY), counted; the call logged 400 request.malformed, not 499', async () => {
      const watch = await watchRefusal(sc, [app]);
      const connection = await watchRefusal(sc, [app]);
      const call = await h2Stream({ ':path': '/tree', 'content-type': 'application/json', 'content-length': '10' });
      const goaway = new Promise<number>((resolve) => call.session.once('goaway', resolve));
      call.stream.write('{"a":');
      // The call is in flight (its body being read for the schema) before the excess arrives.
      await expect.poll(async () => (await (await request(`${sc.adminUrl}/metrics`)).body.text()).includes('meshgate_requests_in_flight{direction="inbound"} 1')).toBe(true);
      call.stream.write(Buffer.alloc(1000, ' '));
      const code = await goaway;
      await call.closed;
      expect(call.status()).toBeUndefined(); // no answer on a connection that broke the protocol
      expect(code).not.toBe(http2.constants.NGHTTP2_NO_ERROR);
      await watch.refused({ reason: 'request.malformed', status: 400, direction: 'inbound', line: { path: '/tree', protocol: 'HTTP/2' } });
      // The connection-level count for the same event (its own log line, at most one a minute per listener).
      await connection.refused({
        reason: 'http2_protocol_error',
        counter: { name: 'meshgate_connections_closed_total', labels: { listener: 'inbound', reason: 'http2_protocol_error' } },
        message: /connection closed/,
      });
    });
  });
});
