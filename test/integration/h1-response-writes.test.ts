import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import type { DownstreamRequest, DownstreamResponse, HttpListener } from '../../src/proxy/listener.ts';
import { createHttpListener } from '../../src/proxy/listener.ts';
import { connectRaw } from '../helpers/raw-socket.ts';

/*
 * How the listener's responses reach the socket (src/proxy/h1-server-response.ts,
 * written corked for a tick): a response ended from inside the parser's
 * callbacks lets the next pipelined request wait its turn, and a streamed body
 * follows the caller's reading pace.
 */

const limits = sidecarConfigSchema.parse({ workload: { service: 'frontend' }, inbound: { app: 'http://127.0.0.1:1' }, mtls: { mode: 'DISABLE' } }).limits;

type Handler = (req: DownstreamRequest, res: DownstreamResponse & { end(body?: string): unknown; write(chunk: Buffer): boolean }) => void;

describe("a data listener's response writes", () => {
  let listener: HttpListener;
  let port: number;
  let handler: Handler = () => {};
  beforeAll(async () => {
    listener = createHttpListener('writes', limits, (req, res) => handler(req, res as Parameters<Handler>[1]));
    port = (await listener.listen(0, '127.0.0.1')).port;
  });
  afterAll(() => listener?.destroy());

  it('answers pipelined requests that the handler ends at once (inside the parse), in order and each once', async () => {
    handler = (req, res) => res.end(`reply ${req.url}`);
    const conn = await connectRaw(port);
    conn.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n');
    const text = await conn.waitFor(/reply \/3/);
    expect([...text.matchAll(/reply (\/\d)/g)].map((m) => m[1])).toEqual(['/1', '/2', '/3']);
    expect(text.match(/HTTP\/1\.1 200 /g)).toHaveLength(3);
    conn.write('GET /4 HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(await conn.waitFor(/reply \/4/)).toContain('reply /4');
    conn.destroy();
  });

  it("holds a streamed body to the caller's pace: write() says wait before the socket buffers much, 'drain' says go on, and every byte arrives in order", async () => {
    const chunk = 64 * 1024;
    const total = 64; // chunks: 4 MiB
    let writtenAtFirstWait = -1;
    const waited = Promise.withResolvers<void>();
    handler = (_req, res) => {
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          const ok = res.write(Buffer.alloc(chunk, sent % 256));
          sent++;
          if (!ok) {
            if (writtenAtFirstWait < 0) {
              writtenAtFirstWait = sent * chunk;
              waited.resolve();
            }
            res.once('drain', pump);
            return;
          }
        }
        waited.resolve(); // never told to wait: the assertion below says so
        res.end();
      };
      pump();
    };
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.pause(); // a caller that does not read yet
    socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
    await waited.promise;
    // The kernel's socket buffers take a few MiB at most; the rest waits in the handler, not in meshgate.
    expect(writtenAtFirstWait).toBeGreaterThan(0);
    expect(writtenAtFirstWait).toBeLessThan((total / 2) * chunk);
    const received: Buffer[] = [];
    let bytes = 0;
    let tail = '';
    const whole = new Promise<void>((resolve) => {
      socket.on('data', (part: Buffer) => {
        received.push(part);
        bytes += part.length;
        tail = (tail + part.subarray(-5).toString('latin1')).slice(-5);
        if (tail === '0\r\n\r\n' && bytes > total * chunk) resolve();
      });
    });
    socket.resume();
    await whole;
    socket.destroy();
    const response = Buffer.concat(received).toString('latin1');
    const body = response.slice(response.indexOf('\r\n\r\n') + 4);
    // Chunked framing: the payload is every chunk, in order.
    let payload = '';
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = Number.parseInt(body.slice(at, eol), 16);
      if (size === 0) break;
      payload += body.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    expect(payload.length).toBe(total * chunk);
    for (let i = 0; i < total; i++) expect(payload.charCodeAt(i * chunk)).toBe(i % 256);
  });
});
