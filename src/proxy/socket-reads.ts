import type { OnReadOpts, Socket } from 'node:net';
import net from 'node:net';

/*
 * Socket reads without Node's stream machinery: libuv reads into a buffer
 * made once by the role (createReadBuffer) and the bytes go straight to the
 * connection's parser, instead of through the socket's Readable stream (a
 * buffer allocated and shrunk per read, push, 'data', and a maybeReadMore tick
 * per read: 3-7 µs per read in a 1 KiB ping-pong, plaintext or TLS;
 * bench/README.md, "Upstream reads without the stream"). Upstream sockets get
 * it through Node's `onread` option (SocketReads), the listeners' accepted
 * HTTP/1.1 connections through readWithoutStream. Sharing one buffer among
 * many sockets is safe because each read is handed on synchronously on the
 * one thread: whoever keeps bytes past the call copies them (a body chunk,
 * bytes held for later, a head still incomplete). The listeners and the
 * upstream sockets read into two different buffers: a read handed on while
 * another is still being parsed (Node's TLS reads decrypted bytes out
 * synchronously when a zero-length write meets a socket with bytes pending)
 * can then only be of the other side.
 */

/** libuv asks for 64 KiB per read on a stream socket; the same here, so a read takes what it took before. */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * A buffer that sockets read into, one at a time: one per process for the upstream HTTP/1.1 sockets (one
 * per pool would keep up to 64 KiB resident for each endpoint that ever sent a large response) and one
 * for the listeners' HTTP/1.1 connections (./h1-server-connection.ts).
 */
export function createReadBuffer(): Buffer {
  return Buffer.allocUnsafe(READ_BUFFER_BYTES);
}

export class SocketReads {
  readonly onread: OnReadOpts;
  #sink: ((bytes: Buffer) => void) | undefined;
  #spokeFirst = false;

  /** `buffer`: the sidecar's upstream read buffer (createReadBuffer), shared by all its upstream sockets. */
  constructor(buffer: Buffer) {
    this.onread = {
      buffer,
      // `buffer` is the memory read into (Node passes it back as a Uint8Array); true: go on reading.
      callback: (length) => {
        const sink = this.#sink;
        if (sink) {
          sink(buffer.subarray(0, length));
          return true;
        }
        // Before any connection took the socket (application data read with the TLS handshake's end):
        // nothing was asked yet. Reading stops; the pool refuses the socket (spokeFirst).
        this.#spokeFirst = true;
        return false;
      },
    };
  }

  /** Whether the upstream sent bytes before a connection took its socket, i.e. before it was asked anything. */
  get spokeFirst(): boolean {
    return this.#spokeFirst;
  }

  /** From now on the socket's bytes go to `sink`; each is valid only during the call. */
  deliverTo(sink: (bytes: Buffer) => void): void {
    this.#sink = sink;
  }
}

/**
 * Node's own names for the state `onread` gives a socket (internal/stream_base_commons.js: kBuffer,
 * kBufferCb, kBufferGen), found on a socket made with the option. Node offers `onread` to the sockets it
 * connects, not to those a server accepts; with these, an accepted socket reads as if it had been
 * given the option (`onStreamRead` takes the same branch for it). Undefined where this Node names them
 * otherwise: its accepted sockets then keep reading through the stream, as before.
 */
const ONREAD_STATE = ((): { buffer: symbol; callback: symbol; generator: symbol } | undefined => {
  const probe = new net.Socket({ onread: { buffer: Buffer.alloc(1), callback: () => true } }); // holds no handle
  const named = (description: string): symbol | undefined => Object.getOwnPropertySymbols(probe).find((key) => key.description === description);
  const buffer = named('kBuffer');
  const callback = named('kBufferCb');
  const generator = named('kBufferGen');
  return buffer && callback && generator ? { buffer, callback, generator } : undefined;
})();

/** What a socket is underneath, as far as reading into a buffer of our own goes (a TCP or TLS stream handle). */
interface StreamHandle {
  useUserBuffer?(buffer: Buffer): void;
}

/**
 * Makes an accepted socket (plaintext or TLS) read into `buffer` and hand each read to `sink`, instead
 * of through its Readable stream: the same saving as `onread` on the upstream side, for the listener's
 * reads of each call's request (a trade named in bench/README.md, "Listener reads without the stream":
 * it leans on Node's internals, checked when this module loads, and falls back to the stream where they
 * differ). Bytes already in the stream (read before, or put back with `unshift`) still come as 'data'.
 * Each `bytes` is valid only during the call. Returns whether the socket now reads this way.
 */
export function readWithoutStream(socket: Socket, buffer: Buffer, sink: (bytes: Buffer) => void): boolean {
  const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
  if (ONREAD_STATE === undefined || handle === null || typeof handle.useUserBuffer !== 'function') return false;
  const state = socket as unknown as Record<symbol, unknown>;
  state[ONREAD_STATE.buffer] = buffer;
  state[ONREAD_STATE.generator] = null;
  state[ONREAD_STATE.callback] = (length: number): void => sink(buffer.subarray(0, length));
  handle.useUserBuffer(buffer);
  return true;
}
