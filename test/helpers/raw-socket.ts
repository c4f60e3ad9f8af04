import net from 'node:net';
import tls from 'node:tls';

/** A client connection driven byte by byte, for attack-style tests. */
export interface RawConnection {
  readonly socket: net.Socket;
  /** Everything received so far, as latin1 text. */
  text(): string;
  /** Resolves once the server closed the connection: how long after connecting, and everything it sent. */
  readonly closed: Promise<{ afterMs: number; text: string }>;
  write(data: string | Buffer): void;
  /** Writes one part every `everyMs` (the attack itself) until the parts run out or the connection closes. */
  trickle(parts: ReadonlyArray<string | Buffer>, everyMs: number): void;
  /** Resolves once the received text matches `pattern`, or rejects when the connection closes first. */
  waitFor(pattern: RegExp): Promise<string>;
  destroy(): void;
}

/** Opens a TCP (or, with `tlsOptions`, TLS) connection to 127.0.0.1:`port`; resolves once connected (handshake done). */
export function connectRaw(port: number, tlsOptions?: tls.ConnectionOptions): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const startedAt = performance.now();
    const socket: net.Socket = tlsOptions ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...tlsOptions }) : net.connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const waiters = new Set<() => void>();
    let trickleTimer: NodeJS.Timeout | undefined;
    const closed = new Promise<{ afterMs: number; text: string }>((done) => {
      socket.once('close', () => {
        clearInterval(trickleTimer);
        done({ afterMs: performance.now() - startedAt, text: received.toString('latin1') });
        for (const wake of waiters) wake();
      });
    });
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      for (const wake of waiters) wake();
    });
    socket.on('error', () => {}); // a reset is an outcome the tests look at through `closed`
    const connection: RawConnection = {
      socket,
      text: () => received.toString('latin1'),
      closed,
      write: (data) => {
        if (!socket.destroyed) socket.write(data);
      },
      trickle(parts, everyMs) {
        let next = 0;
        trickleTimer = setInterval(() => {
          if (next >= parts.length || socket.destroyed) return clearInterval(trickleTimer);
          socket.write(parts[next++]!);
        }, everyMs);
      },
      waitFor(pattern) {
        return new Promise((ok, fail) => {
          const check = (): void => {
            const text = received.toString('latin1');
            if (pattern.test(text)) {
              waiters.delete(check);
              ok(text);
            } else if (socket.destroyed) {
              waiters.delete(check);
              fail(new Error(`connection closed before ${pattern}; received ${JSON.stringify(text)}`));
            }
          };
          waiters.add(check);
          check();
        });
      },
      destroy: () => socket.destroy(),
    };
    socket.once(tlsOptions ? 'secureConnect' : 'connect', () => resolve(connection));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** The HTTP/2 client connection preface followed by an empty SETTINGS frame (RFC 9113 §3.4). */
export const H2_PREFACE_AND_SETTINGS = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);
