import type { AddressInfo } from 'node:net';
import net from 'node:net';

/*
 * An upstream that fails on purpose, for the attack catalogue's upstream-fault
 * class (issue #10). A plain net.Server, so it can send what no HTTP library
 * would: the mode in force when a connection is accepted decides what that
 * connection does. Every connection carries at most one request (the answers
 * say `connection: close`, or the connection never answers), so a pooled
 * connection from an earlier case never carries the next case's mode.
 */

export type FaultMode =
  /** Answers 200 "ok" and closes: the canary. */
  | 'ok'
  /** Accepts, never reads, never answers. */
  | 'hang'
  /** Resets the connection (RST) as soon as it is accepted. */
  | 'reset'
  /** Accepts and reads the request, never answers. */
  | 'blackhole'
  /** A status line no parser takes (`HTTP/1.1 999 ` then bytes that are no header). */
  | 'invalid-status'
  /** A 200 head and one good chunk ("first part"), then a chunk size that is not hexadecimal. */
  | 'bad-chunk'
  /** A 200 head with two different Content-Length values. */
  | 'two-content-length'
  /** A 200 head with one header of `hugeHeaderBytes` (beyond any proxy's header limit). */
  | 'huge-header'
  /** A 200 with a `hugeBodyBytes` body, written only as fast as the reader takes it (backpressure). */
  | 'huge-body';

export interface FaultUpstream {
  readonly port: number;
  readonly address: string;
  readonly url: string;
  /** What the next accepted connection does. */
  mode: FaultMode;
  /** Connections accepted so far (each carries at most one request). */
  hits(): number;
  /** Request bytes read so far, over every connection. */
  bytesRead(): number;
  /** Response body bytes handed to the kernel so far in huge-body mode. */
  bodyBytesSent(): number;
  /** Connections open right now. */
  open(): number;
  close(): Promise<void>;
}

export interface FaultOptions {
  readonly hugeHeaderBytes?: number;
  readonly hugeBodyBytes?: number;
}

const CHUNK = Buffer.alloc(64 * 1024, 'x');

export async function startFaultUpstream(opts: FaultOptions = {}): Promise<FaultUpstream> {
  const hugeHeaderBytes = opts.hugeHeaderBytes ?? 128 * 1024;
  const hugeBodyBytes = opts.hugeBodyBytes ?? 200 * 1024 * 1024;
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let read = 0;
  let bodySent = 0;

  /** Writes `total` bytes, waiting for 'drain' whenever the socket's buffer is full: a well-behaved fast server. */
  const streamBody = (socket: net.Socket, total: number): void => {
    let left = total;
    const pump = (): void => {
      while (left > 0 && !socket.destroyed) {
        const part = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= part.length;
        bodySent += part.length;
        if (!socket.write(part)) return void socket.once('drain', pump);
      }
      if (left === 0) socket.end();
    };
    pump();
  };

  const answer = (socket: net.Socket, mode: FaultMode): void => {
    switch (mode) {
      case 'ok':
        return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      case 'blackhole':
        return;
      case 'invalid-status':
        return void socket.end('HTTP/1.1 999 \r\n\x00\x01\x02 not a header\r\n\r\n');
      case 'bad-chunk':
        return void socket.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\na\r\nfirst part\r\nzz\r\nnot hex\r\n0\r\n\r\n');
      case 'two-content-length':
        return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 12\r\nconnection: close\r\n\r\nhello, world');
      case 'huge-header':
        return void socket.end(`HTTP/1.1 200 OK\r\nx-huge: ${'h'.repeat(hugeHeaderBytes)}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok`);
      case 'huge-body':
        socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${hugeBodyBytes}\r\nconnection: close\r\n\r\n`);
        return streamBody(socket, hugeBodyBytes);
      default:
        throw new Error(`fault mode ${mode} answers no request`);
    }
  };

  const fault: FaultUpstream = {
    port: 0,
    address: '',
    url: '',
    mode: 'ok',
    hits: () => accepted,
    bytesRead: () => read,
    bodyBytesSent: () => bodySent,
    open: () => sockets.size,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };

  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // the sidecar giving up on a connection is the point of several modes
    const mode = fault.mode;
    if (mode === 'reset') return void socket.resetAndDestroy();
    if (mode === 'hang') return void socket.pause();
    let head = '';
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      read += chunk.length;
      if (answered) return;
      head += chunk.toString('latin1');
      // Answer once the request head is in (bodies are read and dropped).
      if (!head.includes('\r\n\r\n')) return;
      answered = true;
      answer(socket, mode);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fault, { port, address: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}` });
}
