import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createH1Pool } from '../../../src/proxy/h1-pool.ts';
import { createReadBuffer, SocketReads } from '../../../src/proxy/socket-reads.ts';

/*
 * Every upstream connection of a sidecar reads into one shared buffer
 * (src/proxy/socket-reads.ts): what a call keeps past a read must be its own.
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

describe('upstream reads into a shared buffer', () => {
  it("keeps each call's head and body chunks intact while another connection's bytes are read into the same buffer", async () => {
    const { port, asked } = await upstream();
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
    const start = (path: string): Kept => {
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
    const a = start('/a');
    const b = start('/b');
    await until(() => asked.size === 2);

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

  it('keeps bytes read before a connection takes the socket, in order, and hands them over first', () => {
    const buffer = Buffer.alloc(16);
    const reads = new SocketReads(buffer);
    const read = (text: string): void => {
      buffer.write(text, 'latin1');
      reads.onread.callback(text.length, buffer);
    };
    read('first');
    read('second');
    const seen: string[] = [];
    reads.deliverTo((bytes) => seen.push(bytes.toString('latin1')));
    read('third');
    expect(seen).toEqual(['first', 'second', 'third']);
  });
});
