import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import type { DownstreamRequest, DownstreamResponse, HttpListener } from '../../src/proxy/listener.ts';
import { createHttpListener } from '../../src/proxy/listener.ts';
import { createReadBuffer } from '../../src/proxy/socket-reads.ts';
import { connectRaw } from '../helpers/raw-socket.ts';

/*
 * The listener's own HTTP/1.1 codec (src/proxy/h1-server-connection.ts) with a
 * handler of the test's: what a caller sees on the wire for pipelining, early
 * answers, 100-continue, response framing and backpressure, HTTP/1.0 and draining.
 */

const limits = sidecarConfigSchema.parse({
  workload: { service: 'frontend' },
  inbound: { app: 'http://127.0.0.1:1' },
  mtls: { mode: 'DISABLE' },
  limits: { headersTimeout: '300ms', requestTimeout: '2s', idleTimeout: '5s' },
}).limits;

type Handler = (req: DownstreamRequest, res: DownstreamResponse & { end(body?: string): unknown; write(chunk: Buffer): boolean }) => void;

describe('HTTP/1.1 on a data listener', () => {
  let listener: HttpListener;
  let port: number;
  let handler: Handler = () => {};
  beforeAll(async () => {
    listener = createHttpListener('test', limits, (req, res) => handler(req, res as Parameters<Handler>[1]), { readBuffer: createReadBuffer() });
    port = (await listener.listen(0, '127.0.0.1')).port;
  });
  afterAll(() => listener?.destroy());

  /** Answers every call and counts them: for cases where none may reach the handler. */
  const countCalls = (): { count: number } => {
    const calls = { count: 0 };
    handler = (_req, res) => {
      calls.count++;
      res.end('served');
    };
    return calls;
  };

  /** Statuses, in the order they came. */
  const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

  it('answers pipelined requests in order, one call at a time', async () => {
    let active = 0;
    let mostActive = 0;
    handler = (req, res) => {
      active++;
      mostActive = Math.max(mostActive, active);
      // The first answer is the slowest: a second call running beside it would answer first.
      setTimeout(
        () => {
          active--;
          res.end(`reply ${req.url}`);
        },
        req.url === '/1' ? 50 : 0,
      );
    };
    const conn = await connectRaw(port);
    conn.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n');
    const text = await conn.waitFor(/reply \/3/);
    expect([...text.matchAll(/reply (\/\d)/g)].map((m) => m[1])).toEqual(['/1', '/2', '/3']);
    expect(text).toContain('content-length: 8\r\n');
    // limits.idleTimeout is 5 s: a client closes an idle connection before the listener does.
    expect(text).toContain('keep-alive: timeout=5\r\n');
    expect(mostActive).toBe(1);
    conn.destroy();
  });

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

  it('reads and drops the body of a call answered before it, and serves the next request on the connection', async () => {
    handler = (req, res) => {
      if (req.url === '/early') res.end('no thanks');
      else res.end('next');
    };
    const conn = await connectRaw(port);
    conn.write('POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n');
    await conn.waitFor(/no thanks/);
    conn.write(Buffer.alloc(200_000, 'x'));
    conn.write('GET /n HTTP/1.1\r\nHost: a\r\n\r\n');
    await conn.waitFor(/next$/);
    expect(statuses(conn.text())).toEqual([200, 200]);
    conn.destroy();
  });

  it('sends 100 Continue to a caller that waits for it, then reads its body', async () => {
    handler = (req, res) => {
      let got = '';
      req.on('data', (c: Buffer) => {
        got += c.toString();
      });
      req.on('end', () => res.end(`got ${got}`));
    };
    const conn = await connectRaw(port);
    conn.write('PUT /c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    await conn.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    conn.write('hello');
    await conn.waitFor(/got hello$/);
    expect(statuses(conn.text())).toEqual([100, 200]);
    conn.destroy();
  });

  it('frames what a handler writes: a length for a whole body, chunks and trailers for a streamed one, nothing for HEAD and 204', async () => {
    handler = (req, res) => {
      const r = res as unknown as import('node:http').ServerResponse;
      if (req.url === '/stream') {
        r.writeHead(200, { 'content-type': 'text/plain' });
        r.write('ab');
        setImmediate(() => {
          r.addTrailers({ 'x-sum': '2' });
          r.end('c');
        });
      } else if (req.url === '/empty') {
        r.writeHead(204, {});
        r.end();
      } else r.end('whole');
    };
    const conn = await connectRaw(port);
    conn.write('GET /stream HTTP/1.1\r\nHost: a\r\n\r\n');
    const streamed = await conn.waitFor(/0\r\nx-sum: 2\r\n\r\n$/);
    expect(streamed).toMatch(/transfer-encoding: chunked\r\n/);
    expect(streamed).toMatch(/\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n/);
    conn.write('HEAD /whole HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nHost: a\r\n\r\nGET /whole HTTP/1.1\r\nHost: a\r\n\r\n');
    const all = await conn.waitFor(/\r\n\r\nwhole$/);
    const rest = all.slice(streamed.length);
    expect(statuses(rest)).toEqual([200, 204, 200]);
    // The HEAD reply has no body bytes: the 204 follows its head at once; the 204 has no framing field.
    expect(rest).toMatch(/\r\n\r\nHTTP\/1\.1 204 No Content\r\ndate: [^\r]+\r\nkeep-alive: timeout=5\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    expect(rest.match(/whole/g)).toHaveLength(1);
    conn.destroy();
  });

  it('refuses a header value that would split the response, so nothing of it reaches the wire', async () => {
    let thrown: unknown;
    handler = (_req, res) => {
      try {
        (res as unknown as import('node:http').ServerResponse).setHeader('x-a', 'ok\r\nx-injected: 1');
      } catch (err) {
        thrown = err;
      }
      // A reason phrase assigned directly is not checked on assignment: the head falls back to the standard one.
      (res as unknown as import('node:http').ServerResponse).statusMessage = 'OK\r\nx-injected: 2';
      res.end('safe');
    };
    const conn = await connectRaw(port);
    conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    const text = await conn.waitFor(/safe$/);
    expect((thrown as { code?: string }).code).toBe('ERR_INVALID_CHAR');
    expect(text).not.toContain('x-injected');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    conn.destroy();
  });

  it('closes an HTTP/1.0 connection after its response unless the caller asked to keep it', async () => {
    handler = (_req, res) => res.end('one');
    const plain = await connectRaw(port);
    plain.write('GET / HTTP/1.0\r\nHost: a\r\n\r\n');
    const { text } = await plain.closed;
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toContain('connection: close\r\n');
    const kept = await connectRaw(port);
    kept.write('GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
    await kept.waitFor(/one$/);
    expect(kept.text()).toContain('connection: keep-alive\r\n');
    kept.write('GET / HTTP/1.0\r\nHost: a\r\n\r\n');
    await kept.closed;
    expect(statuses(kept.text())).toEqual([200, 200]);
  });

  it('counts empty lines before a head against limits.headersTimeout: a stream of CRLFs does not hold a connection', async () => {
    handler = (_req, res) => res.end('first');
    const conn = await connectRaw(port);
    conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await conn.waitFor(/first$/);
    conn.trickle(
      Array.from({ length: 100 }, () => '\r\n'),
      20,
    ); // 2 s of them, past the 300 ms limit
    const { text, afterMs } = await conn.closed;
    expect(statuses(text)).toEqual([200, 408]);
    expect(afterMs).toBeLessThan(1_500);
  });

  it('reads nothing after a 408 for a first head that did not arrive in time', async () => {
    const calls = countCalls();
    const conn = await connectRaw(port);
    conn.write('GET /slow HTTP/1.1\r\n'); // never finished
    await conn.waitFor(/request\.timeout/);
    conn.write('Host: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n');
    const { text } = await conn.closed;
    expect(statuses(text)).toEqual([408]);
    expect(calls.count).toBe(0);
  });

  it("tells a call whose caller left once: 'close', and no 'finish' for an answer written after it", async () => {
    const events: string[] = [];
    let closed: () => void = () => {};
    const wasClosed = new Promise<void>((resolve) => (closed = resolve));
    let late: (() => void) | undefined;
    handler = (_req, res) => {
      res.on('finish', () => events.push('finish'));
      res.on('close', () => {
        events.push('close');
        closed();
      });
      late = () => res.end('too late');
    };
    const conn = await connectRaw(port);
    conn.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
    while (late === undefined) await new Promise((resolve) => setImmediate(resolve));
    conn.destroy();
    await wasClosed;
    late();
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(['close']);
  });

  it('answers CONNECT with 501 request.unsupported and closes: meshgate opens no tunnels', async () => {
    const calls = countCalls();
    const conn = await connectRaw(port);
    conn.write('CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\n\r\n');
    const { text } = await conn.closed;
    expect(statuses(text)).toEqual([501]);
    expect(text).toContain('x-meshgate-reason: request.unsupported');
    expect(calls.count).toBe(0);
  });

  it('gives a second request head on a kept connection limits.headersTimeout too: 408, then closed', async () => {
    handler = (_req, res) => res.end('first');
    const conn = await connectRaw(port);
    conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    await conn.waitFor(/first$/);
    conn.write('GET /slow HTTP/1.1\r\nHost: a\r\n'); // never finished
    const { text } = await conn.closed;
    expect(statuses(text)).toEqual([200, 408]);
    expect(text).toContain('x-meshgate-reason: request.timeout');
  });
});

describe('draining an HTTP/1.1 listener', () => {
  it('closes idle connections at once and a busy one after its response, which says connection: close', async () => {
    let answer: (() => void) | undefined;
    const listener = createHttpListener(
      'drain',
      limits,
      (_req, res) => {
        answer = () => (res as unknown as { end(body: string): void }).end('done');
      },
      { readBuffer: createReadBuffer() },
    );
    const { port } = await listener.listen(0, '127.0.0.1');
    try {
      const idle = await connectRaw(port);
      const busy = await connectRaw(port);
      busy.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      while (answer === undefined) await new Promise((resolve) => setImmediate(resolve));
      const stopped = listener.stopAccepting();
      await idle.closed;
      answer();
      const { text } = await busy.closed;
      expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(text).toContain('connection: close\r\n');
      await stopped;
    } finally {
      listener.destroy();
    }
  });
});

describe('the idle timeout of an HTTP/1.1 listener', () => {
  it('closes a kept connection once nothing moved on it for limits.idleTimeout, and not while its response keeps writing', async () => {
    const idleMs = 200;
    let endedAt = 0;
    const listener = createHttpListener(
      'idle',
      { ...limits, idleTimeout: idleMs },
      (_req, res) => {
        const streamed = res as unknown as { write(chunk: string): void; end(): void };
        // 8 chunks 60 ms apart: the response runs twice the idle timeout, never idle for it.
        let sent = 0;
        const tick = setInterval(() => {
          streamed.write(`chunk ${sent}\n`);
          if (++sent === 8) {
            clearInterval(tick);
            streamed.end();
            endedAt = performance.now(); // the listener's last byte: the idle time counts from here
          }
        }, 60);
      },
      { readBuffer: createReadBuffer() },
    );
    const { port } = await listener.listen(0, '127.0.0.1');
    try {
      const conn = await connectRaw(port);
      conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      const text = await conn.waitFor(/\r\n0\r\n\r\n$/);
      expect(text).toContain('chunk 7\n');
      await conn.closed;
      // Not closed with the response, nor before the idle time since its end (the clock's millisecond aside).
      expect(performance.now() - endedAt).toBeGreaterThanOrEqual(idleMs - 2);
    } finally {
      listener.destroy();
    }
  });
});
