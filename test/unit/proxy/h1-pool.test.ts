import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { UpstreamDispatcher } from '../../../src/proxy/h1-pool.ts';
import { createH1Pool } from '../../../src/proxy/h1-pool.ts';
import { createReadBuffer } from '../../../src/proxy/socket-reads.ts';
import { classifyUpstreamError } from '../../../src/proxy/upstream-errors.ts';

interface Answer {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
  trailers: Record<string, string | string[]>;
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as net.AddressInfo).port;
}

/** A raw server: counts connections and answers each request with what `answer` writes. */
async function rawServer(answer: (socket: net.Socket, request: string) => void): Promise<{ port: number; connections: () => number; sockets: Set<net.Socket> }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let pending = '';
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      const end = pending.indexOf('\r\n\r\n');
      if (end < 0) return;
      const request = pending.slice(0, end);
      pending = '';
      answer(socket, request);
    });
    socket.on('error', () => {});
  });
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
  });
  return { port: await listen(server), connections: () => connections, sockets };
}

function pool(port: number, overrides: Partial<Parameters<typeof createH1Pool>[0]> = {}): UpstreamDispatcher {
  const created = createH1Pool({
    connect: (onread, done) => {
      const socket = net.connect({ port, host: '127.0.0.1', onread });
      const failed = (err: Error): void => done(err, null);
      socket.once('connect', () => {
        socket.off('error', failed);
        done(null, socket);
      });
      socket.once('error', failed);
    },
    maxConnections: 8,
    keepAliveTimeoutMs: 30_000,
    maxHeadBytes: 16 * 1024,
    readBuffer: createReadBuffer(),
    ...overrides,
  });
  cleanups.push(() => created.destroy());
  return created;
}

function call(
  p: UpstreamDispatcher,
  opts: { method?: string; path?: string; headers?: Record<string, string | string[]>; body?: Readable | null; bodyTimeout?: number },
  onStart?: (abort: (err: Error) => void) => void,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const answer: Answer = { status: 0, headers: {}, body: '', trailers: {} };
    p.dispatch(
      { method: opts.method ?? 'GET', path: opts.path ?? '/', headers: { host: 'app', ...opts.headers }, body: opts.body ?? null, bodyTimeout: opts.bodyTimeout ?? 0 },
      {
        onRequestStart: (ctl) => onStart?.((err) => ctl.abort(err)),
        onResponseStart: (_ctl, status, headers) => Object.assign(answer, { status, headers }),
        onResponseData: (_ctl, chunk) => {
          answer.body += chunk.toString();
        },
        onResponseEnd: (_ctl, trailers) => resolve({ ...answer, trailers: trailers as Answer['trailers'] }),
        onResponseError: (_ctl, err) => reject(err),
      },
    );
  });
}

const OK = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe("the sidecar's HTTP/1.1 upstream connections", () => {
  it('carries one call after another on one kept-alive connection', async () => {
    const server = await rawServer((socket) => socket.write(OK('hi')));
    const p = pool(server.port);
    for (let i = 0; i < 5; i++) expect(await call(p, {})).toMatchObject({ status: 200, body: 'hi' });
    expect(server.connections()).toBe(1);
  });

  it('opens at most maxConnections and queues the rest, which then run on freed connections', async () => {
    const waiting: net.Socket[] = [];
    const server = await rawServer((socket) => waiting.push(socket));
    const p = pool(server.port, { maxConnections: 2 });
    const calls = [call(p, {}), call(p, {}), call(p, {}), call(p, {})];
    while (waiting.length < 2) await new Promise((resolve) => setImmediate(resolve));
    expect(server.connections()).toBe(2);
    // Answer as requests arrive: the queued two go out on the two connections once they are free.
    for (let answered = 0; answered < 4; answered++) {
      while (waiting.length === 0) await new Promise((resolve) => setImmediate(resolve));
      waiting.shift()!.write(OK(`r${answered}`));
    }
    expect((await Promise.all(calls)).map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect(server.connections()).toBe(2);
  });

  it('streams a body of declared length as is, and chunk-encodes one without', async () => {
    const seen: Array<{ te: string | undefined; length: string | undefined; body: string }> = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        seen.push({ te: req.headers['transfer-encoding'], length: req.headers['content-length'], body });
        res.end('done');
      });
    });
    const port = await listen(server);
    const p = pool(port);
    await call(p, { method: 'POST', headers: { 'content-length': '11' }, body: Readable.from([Buffer.from('hello '), Buffer.from('world')]) });
    await call(p, { method: 'POST', body: Readable.from([Buffer.from('chunk'), Buffer.from('ed')]) });
    await call(p, { method: 'POST' });
    // A body the listener has whole (its H1Request's takeWhole) leaves with the head, framed the same way.
    const whole = (text: string): Readable => Object.assign(Readable.from([]), { takeWhole: () => Buffer.from(text) });
    await call(p, { method: 'POST', headers: { 'content-length': '5' }, body: whole('whole') });
    await call(p, { method: 'POST', body: whole('whole, chunked') });
    expect(seen).toEqual([
      { te: undefined, length: '11', body: 'hello world' },
      { te: 'chunked', length: undefined, body: 'chunked' },
      { te: undefined, length: '0', body: '' },
      { te: undefined, length: '5', body: 'whole' },
      { te: 'chunked', length: undefined, body: 'whole, chunked' },
    ]);
  });

  it('refuses at dispatch a field that would split the request (no bytes leave)', async () => {
    const server = await rawServer((socket) => socket.write(OK('x')));
    const p = pool(server.port);
    expect(() => p.dispatch({ method: 'GET', path: '/', headers: { 'x-a': 'a\r\nx-injected: 1' } }, {})).toThrow(/invalid value of header x-a/);
    // Each member of a repeated field, any control character but HTAB, and anything beyond latin1.
    for (const bad of [['ok', 'b\nx-injected: 1'], 'a\rb', 'nul\u0000', 'del\u007f', 'bell\u0007', 'wide\u0100', 'emoji \ud83d\ude00']) {
      expect(() => p.dispatch({ method: 'GET', path: '/', headers: { 'x-b': bad } }, {})).toThrow(/invalid value of header x-b/);
    }
    expect(() => p.dispatch({ method: 'GET', path: '/a b', headers: {} }, {})).toThrow(/request target/);
    expect(() => p.dispatch({ method: 'GET', path: '/', headers: { 'transfer-encoding': 'chunked' } }, {})).toThrow(/cannot be sent/);
    expect(server.connections()).toBe(0);
  });

  it('writes field bytes as node:http read them: a latin1 value leaves as the same bytes', async () => {
    let requestHead = '';
    const server = await rawServer((socket, request) => {
      requestHead = request;
      socket.write(OK('x'));
    });
    await call(pool(server.port), { path: '/caf\u00e9', headers: { 'x-name': 'Ren\u00e9' } });
    expect(requestHead).toContain('GET /caf\u00e9 HTTP/1.1\r\n'); // one byte 0xE9 each, read back as latin1
    expect(requestHead).toContain('x-name: Ren\u00e9'); // UTF-8 would read back as 'RenÃ©'
  });

  it('skips a field set to undefined and writes a number as its digits, as undici did', async () => {
    let requestHead = '';
    const server = await rawServer((socket, request) => {
      requestHead = request;
      socket.write(OK('x'));
    });
    await call(pool(server.port), { headers: { 'x-gone': undefined, 'x-count': 3 } as unknown as Record<string, string> });
    expect(requestHead).not.toContain('x-gone');
    expect(requestHead).toContain('x-count: 3');
  });

  it('relays chunked trailers (gRPC status lives there)', async () => {
    const server = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\ngrpc-status: 0\r\n\r\n'));
    expect(await call(pool(server.port), {})).toMatchObject({ body: 'ok', trailers: { 'grpc-status': '0' } });
  });

  it("honours the upstream's Keep-Alive timeout, less a margin: a connection it is about to close is not reused", async () => {
    const server = await rawServer((socket) => socket.write(OK('x', 'keep-alive: timeout=1\r\n')));
    const p = pool(server.port);
    await call(p, {});
    await call(p, {});
    expect(server.connections()).toBe(2);
  });

  it('closes a connection left idle past keepAliveTimeoutMs, and the next call opens a fresh one', async () => {
    const server = await rawServer((socket) => socket.write(OK('x')));
    const p = pool(server.port, { keepAliveTimeoutMs: 60 });
    await call(p, {});
    const [upstreamSide] = server.sockets;
    await once(upstreamSide!, 'close');
    await call(p, {});
    expect(server.connections()).toBe(2);
  });

  it('reuses an idle connection within its keep-alive time, the upstream hint included', async () => {
    const server = await rawServer((socket) => socket.write(OK('x', 'keep-alive: timeout=5\r\n')));
    const p = pool(server.port, { keepAliveTimeoutMs: 30_000 });
    await call(p, {});
    await call(p, {});
    expect(server.connections()).toBe(1);
  });

  it('fails a call whose response body stalls past bodyTimeout, as a timeout', async () => {
    const server = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf'));
    const err = await call(pool(server.port), { bodyTimeout: 50 }).catch((e: unknown) => e);
    expect(classifyUpstreamError(err)).toBe('timeout');
  });

  it('closes the connection of a call aborted mid-response and of a response it refuses, and opens a fresh one after', async () => {
    let n = 0;
    const server = await rawServer((socket) => {
      n++;
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf');
      else if (n === 2) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n');
      else socket.write(OK('fine'));
    });
    const p = pool(server.port);
    const aborted = await call(p, {}, (abort) => setTimeout(() => abort(Object.assign(new Error('caller went away'), { code: 'TEST_ABORT' })), 20)).catch((e: unknown) => e);
    expect((aborted as { code?: string }).code).toBe('TEST_ABORT');
    const refusedErr = await call(p, {}).catch((e: unknown) => e);
    expect(classifyUpstreamError(refusedErr)).toBe('protocol-error');
    expect(await call(p, {})).toMatchObject({ body: 'fine' });
    expect(server.connections()).toBe(3);
  });

  it('hands nothing more to a handler that aborted its call from inside a callback (a response tap refusing the head)', async () => {
    const server = await rawServer((socket) => socket.write(OK('body in the same packet as the head')));
    const p = pool(server.port);
    const events: string[] = [];
    await new Promise<void>((resolve) =>
      p.dispatch(
        { method: 'GET', path: '/', headers: { host: 'app' } },
        {
          onResponseStart: (ctl) => {
            events.push('head');
            ctl.abort(new Error('refused by the tap'));
          },
          onResponseData: () => void events.push('data'),
          onResponseEnd: () => void events.push('end'),
          onResponseError: (_ctl, err) => {
            events.push(`error: ${err.message}`);
            setTimeout(resolve, 20); // anything still to come would arrive meanwhile
          },
        },
      ),
    );
    expect(events).toEqual(['head', 'error: refused by the tap']);
    expect(await call(p, {})).toMatchObject({ status: 200 }); // on a fresh connection
    expect(server.connections()).toBe(2);
  });

  it('fails a call whose upstream closes mid-body as a reset', async () => {
    const server = await rawServer((socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf'));
    const err = await call(pool(server.port), {}).catch((e: unknown) => e);
    expect(classifyUpstreamError(err)).toBe('reset');
  });

  it('ends a call answered before its body was sent, and does not reuse that connection', async () => {
    const server = await rawServer((socket) => socket.write('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n'));
    const p = pool(server.port);
    const body = new PassThrough();
    body.write('part of a body that never ends');
    expect(await call(p, { method: 'POST', body })).toMatchObject({ status: 413 });
    body.end();
    await call(p, { method: 'POST', body: Readable.from([Buffer.from('x')]) });
    expect(server.connections()).toBe(2);
  });

  it('a call still connecting when close() comes is carried; one still connecting when destroy() comes fails and its socket goes', async () => {
    const server = await rawServer((socket) => socket.write(OK('made it')));
    const slowConnect = (port: number) => (onread: net.OnReadOpts, done: (err: Error | null, socket: net.Socket | null) => void) => {
      setTimeout(() => {
        const socket = net.connect({ port, host: '127.0.0.1', onread });
        socket.once('connect', () => done(null, socket));
        socket.once('error', (err) => done(err, null));
      }, 30);
    };
    const p = pool(server.port, { connect: slowConnect(server.port) });
    const carried = call(p, {});
    await p.close();
    expect(await carried).toMatchObject({ body: 'made it' });

    const q = pool(server.port, { connect: slowConnect(server.port) });
    const failed = call(q, {}).catch((e: unknown) => e);
    await q.destroy();
    expect(((await failed) as { code?: string }).code).toBe('UND_ERR_DESTROYED');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.sockets.size).toBe(0); // every socket closed: neither pool holds one
  });

  it('lets a request body held back by backpressure flow again when its call fails, so the caller is not stuck', async () => {
    // Takes the head, reads nothing more, then goes away.
    const server = await rawServer((socket) => {
      socket.pause();
      setTimeout(() => socket.destroy(), 50);
    });
    const body = new PassThrough({ highWaterMark: 16 * 1024 });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const feeding = setInterval(() => body.write(chunk), 1); // a caller that keeps uploading
    try {
      const err = await call(pool(server.port), { method: 'POST', body }).catch((e: unknown) => e);
      expect(classifyUpstreamError(err)).toBe('reset');
      expect(body.isPaused()).toBe(false);
      expect(body.listenerCount('data')).toBe(0);
    } finally {
      clearInterval(feeding);
      body.destroy();
    }
  });

  it('takes only the first answer of a connector that reports twice (a late socket error after the connect)', async () => {
    const server = await rawServer((socket) => socket.write(OK('once')));
    const p = pool(server.port, {
      maxConnections: 1,
      connect: (onread, done) => {
        const socket = net.connect({ port: server.port, host: '127.0.0.1', onread });
        socket.once('connect', () => {
          done(null, socket);
          done(new Error('reported again'), null);
        });
      },
    });
    expect(await Promise.all([call(p, {}), call(p, {}), call(p, {})])).toMatchObject([{ body: 'once' }, { body: 'once' }, { body: 'once' }]);
    expect(server.connections()).toBe(1); // the second answer did not free a slot that was never freed
  });

  it('close() waits for calls in flight; destroy() fails them', async () => {
    const held: net.Socket[] = [];
    const server = await rawServer((socket) => held.push(socket));
    const p = pool(server.port);
    const first = call(p, {});
    while (held.length === 0) await new Promise((resolve) => setImmediate(resolve));
    let closed = false;
    const closing = p.close().then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(closed).toBe(false);
    held[0]!.write(OK('late'));
    expect(await first).toMatchObject({ body: 'late' });
    await closing;

    const q = pool(server.port);
    const second = call(q, {}).catch((e: unknown) => e);
    while (held.length < 2) await new Promise((resolve) => setImmediate(resolve));
    await q.destroy();
    expect(((await second) as { code?: string }).code).toBe('UND_ERR_DESTROYED');
  });
});
