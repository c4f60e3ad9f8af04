import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { bothListeners, serviceTo, startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { Flag, FrameType, frame, headerBlock, hpackInt, rstCode } from '../helpers/h2-frames.ts';
import type { Field } from '../helpers/h2-raw.ts';
import { connectH2, requestFields, requestFrame, stillOpen } from '../helpers/h2-raw.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, HTTP/2 class: header blocks no conforming client sends, on both
 * plaintext (h2c) listeners. Each is refused on its own stream, either by
 * node's codec (RST_STREAM before any handler runs) or by meshgate (400
 * request.malformed); either way it is logged and counted once, the
 * upstream sees nothing, and a canary on the same connection gets its own 200.
 */

const { NGHTTP2_PROTOCOL_ERROR, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_REFUSED_STREAM } = http2.constants;
const AUTHORITY = 'orders';

const without = (name: string): Field[] => requestFields(AUTHORITY).filter(([n]) => n !== name);
const withField = (...extra: Field[]): Field[] => [...requestFields(AUTHORITY), ...extra];

/** Refused by node's codec before meshgate sees them: RST_STREAM PROTOCOL_ERROR. */
const CODEC_REFUSED: Array<[string, Field[]]> = [
  ['missing :method', without(':method')],
  ['missing :path', without(':path')],
  ['empty :path', requestFields(AUTHORITY, '')],
  ['a pseudo-header after a regular header', [...without(':authority'), ['x-a', '1'], [':authority', AUTHORITY]]],
  ['a duplicate :path', withField([':path', '/admin'])],
  ['an unknown pseudo-header', withField([':tenant', 'x'])],
  ['an uppercase header name', withField(['X-Upper', '1'])],
  ['connection: keep-alive', withField(['connection', 'keep-alive'])],
  ['keep-alive: 5', withField(['keep-alive', '5'])],
  ['transfer-encoding: chunked', withField(['transfer-encoding', 'chunked'])],
  ['te: gzip (only trailers is allowed)', withField(['te', 'gzip'])],
];

/** The canary after an attack on stream 1: its own 200 from the upstream. */
async function expectCanary(conn: Awaited<ReturnType<typeof connectH2>>, streamId: number): Promise<void> {
  conn.write(requestFrame(streamId, requestFields(AUTHORITY, '/canary')));
  expect(JSON.parse(await conn.body(streamId))).toMatchObject({ url: '/canary' });
  // :status 200 is the static table's entry 8, sent indexed (RFC 7541 Appendix A).
  const head = conn.frames().find((f) => f.type === FrameType.HEADERS && f.streamId === streamId)!;
  expect(head.payload[0]).toBe(0x88);
}

describe('HTTP/2 header blocks no conforming client sends', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({ config: (app) => ({ services: [serviceTo(app, AUTHORITY, { protocol: 'http1' })] }) });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
  });
  const listeners = bothListeners(() => sc);

  describe.each(listeners)('%s', (direction, port) => {
    it.each(CODEC_REFUSED)('%s: RST_STREAM PROTOCOL_ERROR, logged as 400 request.malformed, canary answered', async (_case, fields) => {
      const watch = await watchRefusal(sc, [app]);
      const conn = await connectH2(port());
      conn.write(requestFrame(1, fields));
      await conn.waitForFrame((f) => f.type === FrameType.RST_STREAM && f.streamId === 1);
      expect(rstCode(conn.frames(), 1)).toBe(NGHTTP2_PROTOCOL_ERROR);
      await expectCanary(conn, 3);
      expect(stillOpen(conn)).toBe(true);
      conn.destroy();
      await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: 1 }); // the canary only
    });

    it('a malformed stream and then the caller leaves: still logged and counted once', async () => {
      const watch = await watchRefusal(sc, [app]);
      const conn = await connectH2(port());
      conn.write(requestFrame(1, withField(['X-Upper', '1'])));
      await conn.waitForFrame((f) => f.type === FrameType.RST_STREAM && f.streamId === 1);
      expect(rstCode(conn.frames(), 1)).toBe(NGHTTP2_PROTOCOL_ERROR);
      conn.destroy();
      await watch.refused({ reason: 'request.malformed', status: 400, direction });
    });

    it(':authority and host disagree: 400 request.malformed from meshgate, canary answered', async () => {
      const watch = await watchRefusal(sc, [app]);
      const conn = await connectH2(port());
      conn.write(requestFrame(1, withField(['host', 'evil.example'])));
      const body = JSON.parse(await conn.body(1)) as { code: string; reason: string };
      expect(body).toMatchObject({ code: 'request.malformed' });
      expect(body.reason).not.toContain('evil');
      await expectCanary(conn, 3);
      expect(stillOpen(conn)).toBe(true);
      conn.destroy();
      await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: 1 });
    });

    it('more header fields than limits.maxHeadersCount (100): 431 request.headers_too_large from meshgate, canary answered', async () => {
      const watch = await watchRefusal(sc, [app]);
      const conn = await connectH2(port());
      conn.write(requestFrame(1, withField(...Array.from({ length: 101 }, (_, i): Field => [`x-f${i}`, 'v']))));
      expect(JSON.parse(await conn.body(1))).toMatchObject({ code: 'request.headers_too_large' });
      await expectCanary(conn, 3);
      expect(stillOpen(conn)).toBe(true);
      conn.destroy();
      await watch.refused({ reason: 'request.headers_too_large', status: 431, direction, upstreamHits: 1 }); // the canary only
    });

    it('HPACK bomb: one dynamic-table entry referenced until the list is 250 times limits.maxHeaderSize: stream refused, canary answered', async () => {
      const watch = await watchRefusal(sc, [app]);
      const conn = await connectH2(port());
      // A 4 000-byte field added to the dynamic table (literal with incremental indexing, RFC 7541 §6.2.1),
      // then 1 000 one-byte references to it (index 62, the newest dynamic entry): 4 MB decoded from 5 KB.
      const entry = Buffer.concat([Buffer.from([0x40]), hpackInt(5, 7), Buffer.from('x-big'), hpackInt(4000, 7), Buffer.alloc(4000, 0x61)]);
      const repeats = Buffer.alloc(1000, 0x80 | 62);
      conn.write(frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, Buffer.concat([headerBlock(requestFields(AUTHORITY)), entry, repeats])));
      await conn.waitForFrame((f) => f.type === FrameType.RST_STREAM && f.streamId === 1);
      expect(rstCode(conn.frames(), 1)).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
      await expectCanary(conn, 3);
      expect(stillOpen(conn)).toBe(true);
      conn.destroy();
      await watch.refused({ reason: 'request.malformed', status: 400, direction, upstreamHits: 1 });
    });
  });
});

describe('HTTP/2 streams past SETTINGS_MAX_CONCURRENT_STREAMS', () => {
  let pair: AppAndSidecar;
  let app: TestServer;
  let sc: TestSidecar;
  const held: Array<() => void> = [];
  beforeAll(async () => {
    const echo = echoHandler('app');
    pair = await startAppAndSidecar({
      app: (req, res) => {
        if (req.url === '/hold') held.push(() => res.end('released'));
        else echo(req, res);
      },
      config: (app) => ({ services: [serviceTo(app, AUTHORITY, { protocol: 'http1' })], limits: { http2MaxConcurrentStreams: 5 } }),
    });
    ({ app, sc } = pair);
  });
  afterAll(async () => {
    for (const release of held.splice(0)) release();
    await pair?.close();
  });

  it.each(['inbound', 'outbound'] as const)('%s: the sixth open stream is refused (REFUSED_STREAM), logged as 503 request.refused_stream; canary answered once the five end', async (direction) => {
    const port = direction === 'inbound' ? sc.inbound.port : sc.outbound.port;
    const hits = app.hits();
    const conn = await connectH2(port);
    conn.write(Buffer.concat([1, 3, 5, 7, 9].map((id) => requestFrame(id, requestFields(AUTHORITY, '/hold')))));
    await expect.poll(() => app.hits() - hits).toBe(5);
    const watch = await watchRefusal(sc, [app]);
    conn.write(requestFrame(11, requestFields(AUTHORITY, '/over')));
    await conn.waitForFrame((f) => f.type === FrameType.RST_STREAM && f.streamId === 11);
    expect(rstCode(conn.frames(), 11)).toBe(NGHTTP2_REFUSED_STREAM);
    for (const release of held.splice(0)) release();
    await Promise.all([1, 3, 5, 7, 9].map((id) => conn.body(id)));
    await expectCanary(conn, 13);
    expect(stillOpen(conn)).toBe(true);
    conn.destroy();
    await watch.refused({ reason: 'request.refused_stream', status: 503, direction, upstreamHits: 1 });
  });
});
