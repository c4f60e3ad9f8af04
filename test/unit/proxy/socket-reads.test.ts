import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { createH1Pool } from '../../../src/proxy/h1-pool.ts';
import { UpstreamProtocolError } from '../../../src/proxy/h1-response-parser.ts';
import { createReadBuffer, readWithoutStream } from '../../../src/proxy/socket-reads.ts';
import { classifyUpstreamError, reasonForFailure } from '../../../src/proxy/upstream-errors.ts';
import { issueCert } from '../../helpers/mesh-pki.ts';

/*
 * Every upstream connection of a sidecar reads into one shared buffer
 * (src/proxy/socket-reads.ts): what a call keeps past a read must be its own.
 * The listeners' connections read into another (their copies:
 * test/integration/listener-reads.test.ts).
 */

const closers: Array<() => void> = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** One event-loop turn: bytes written on loopback before it have been read by then. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Turns until `ready`, a bounded number of them (what was awaited is asserted after). */
async function until(ready: () => boolean): Promise<void> {
  for (let i = 0; i < 1_000 && !ready(); i++) await turn();
}

/** Upstream sockets by the path each was asked for. */
async function upstream(): Promise<{ port: number; asked: Map<string, net.Socket> }> {
  const asked = new Map<string, net.Socket>();
  const server = net.createServer((socket) => {
    socket.once('data', (head) => asked.set(head.toString('latin1').split(' ')[1]!, socket));
    closers.push(() => socket.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, asked };
}

interface Kept {
  headers: Record<string, unknown>;
  /** The chunks as handed over, not copied by the test. */
  chunks: Buffer[];
  ended: Promise<void>;
}

/** Calls through a pool of two connections reading into one buffer, each keeping its chunks as handed over. */
function callsTo(port: number): (path: string) => Kept {
  const pool = createH1Pool({
    connect: (onread, done) => {
      const socket = net.connect({ port, host: '127.0.0.1', onread });
      socket.once('connect', () => done(null, socket));
    },
    maxConnections: 2,
    keepAliveTimeoutMs: 30_000,
    maxHeadBytes: 16 * 1024,
    readBuffer: createReadBuffer(),
  });
  closers.push(() => void pool.destroy());
  return (path: string): Kept => {
    const kept: Kept = { headers: {}, chunks: [], ended: Promise.resolve() };
    kept.ended = new Promise((resolve, reject) => {
      pool.dispatch(
        { method: 'GET', path, headers: { host: 'app' } },
        {
          onResponseStart: (_ctl, _status, headers) => void (kept.headers = headers),
          onResponseData: (_ctl, chunk) => void kept.chunks.push(chunk),
          onResponseEnd: () => resolve(),
          onResponseError: (_ctl, err) => reject(err),
        },
      );
    });
    return kept;
  };
}

/** Calls /a and /b in flight on two connections of one pool, their upstream sockets by path. */
async function twoCalls(): Promise<{ a: Kept; b: Kept; asked: Map<string, net.Socket>; start: (path: string) => Kept }> {
  const { port, asked } = await upstream();
  const start = callsTo(port);
  const a = start('/a');
  const b = start('/b');
  await until(() => asked.size === 2);
  return { a, b, asked, start };
}

describe('upstream reads into a shared buffer', () => {
  it("keeps each call's head and body chunks intact while another connection's bytes are read into the same buffer", async () => {
    const { a, b, asked, start } = await twoCalls();

    // a's head stops halfway; b's whole answer is read over the same bytes of the buffer.
    asked.get('/a')!.write('HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-from: upstre');
    await turn();
    asked.get('/b')!.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-from: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\nBBBB');
    await b.ended;
    asked.get('/a')!.write('am-a\r\n\r\n');
    await until(() => a.headers['x-from'] !== undefined);
    expect(a.headers['x-from']).toBe('upstream-a');
    asked.get('/a')!.write('AAAA');
    await until(() => a.chunks.length > 0);
    // a's first body chunk is held as handed over; b's next answer is read over the same bytes.
    const b2 = start('/b');
    asked.get('/b')!.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
    await b2.ended;
    asked.get('/a')!.write('ZZZZ');
    await a.ended;

    expect(Buffer.concat(a.chunks).toString()).toBe('AAAAZZZZ');
    expect(Buffer.concat(b.chunks).toString()).toBe('BBBB');
  });

  it('keeps the chunks of a body that runs until the upstream closes the same way', async () => {
    const { a, b, asked } = await twoCalls();
    asked.get('/a')!.write('HTTP/1.1 200 OK\r\n\r\nAAAA');
    await until(() => a.chunks.length > 0);
    // a's first chunk is held as handed over; b's answer is read over the same bytes of the buffer.
    asked.get('/b')!.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-from: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\nBBBB');
    await b.ended;
    asked.get('/a')!.end('ZZZZ');
    await a.ended;
    expect(Buffer.concat(a.chunks).toString()).toBe('AAAAZZZZ');
  });

  it("fails a call at once, as a protocol error, when its new connection's upstream sent bytes before it was asked anything", async () => {
    const { port } = await upstream();
    let sockets = 0;
    const pool = createH1Pool({
      // As when application data comes in the same read as the end of a TLS handshake: read before the socket is handed over.
      connect: (onread, done) => {
        const socket = net.connect({ port, host: '127.0.0.1', onread });
        sockets++;
        socket.once('connect', () => {
          const into = onread.buffer as Buffer;
          const stopped = onread.callback(into.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n', 'latin1'), into) === false;
          expect(stopped).toBe(true); // reading stops: nothing more is taken from that socket
          done(null, socket);
        });
      },
      maxConnections: 1,
      keepAliveTimeoutMs: 30_000,
      maxHeadBytes: 16 * 1024,
      readBuffer: createReadBuffer(),
    });
    closers.push(() => void pool.destroy());
    const failure = await new Promise<Error>((resolve, reject) =>
      pool.dispatch(
        { method: 'GET', path: '/', headers: { host: 'app' } },
        { onResponseStart: () => reject(new Error('answered')), onResponseData: () => {}, onResponseEnd: () => reject(new Error('answered')), onResponseError: (_ctl, err) => resolve(err) },
      ),
    );
    expect(failure).toBeInstanceOf(UpstreamProtocolError);
    expect(failure.message).toMatch(/before it was asked/);
    expect(reasonForFailure(classifyUpstreamError(failure))).toBe('upstream.protocol_error'); // 502 to the caller
    // The slot it held is free again: the next call connects anew (and meets the same upstream).
    await new Promise<Error>((resolve) =>
      pool.dispatch(
        { method: 'GET', path: '/', headers: { host: 'app' } },
        { onResponseStart: () => {}, onResponseData: () => {}, onResponseEnd: () => {}, onResponseError: (_ctl, err) => resolve(err) },
      ),
    );
    expect(sockets).toBe(2);
  });
});

describe('accepted sockets reading without the stream (readWithoutStream)', () => {
  /** Accepts one connection from `connect`, takes its reads over, and returns what arrived each way. */
  async function accepted(server: net.Server, connect: (port: number) => net.Socket): Promise<{ taken: boolean; read: string; data: number }> {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => server.close());
    const client = connect((server.address() as net.AddressInfo).port);
    closers.push(() => client.destroy());
    const [socket] = (await once(server, server instanceof tls.Server ? 'secureConnection' : 'connection')) as [net.Socket];
    closers.push(() => socket.destroy());
    let read = '';
    let data = 0;
    socket.on('data', () => data++);
    const taken = readWithoutStream(socket, createReadBuffer(), (bytes) => void (read += bytes.toString('latin1')));
    client.write('over the shared buffer');
    await until(() => read.length >= 22);
    return { taken, read, data };
  }

  // Node's internals this leans on are checked here: a Node that names them otherwise fails this, not a user's pod.
  it('takes over an accepted plaintext socket on this Node: its bytes come to the sink, no data event', async () => {
    expect(await accepted(net.createServer(), (port) => net.connect(port, '127.0.0.1'))).toEqual({ taken: true, read: 'over the shared buffer', data: 0 });
  });

  it('takes over an accepted TLS socket the same way', async () => {
    const cert = await issueCert({ spiffeId: 'spiffe://test.local/ns/default/sa/reads' });
    const server = tls.createServer({ key: cert.keyPem, cert: cert.certPem });
    expect(await accepted(server, (port) => tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }))).toEqual({ taken: true, read: 'over the shared buffer', data: 0 });
  });
});
