import type { OnReadOpts } from 'node:net';

/*
 * An upstream socket's reads taken with Node's `onread` option: libuv reads
 * into one buffer that every upstream connection of the sidecar shares (made
 * once by the role, createReadBuffer), and the bytes go
 * straight to the connection's parser, instead of through the socket's
 * Readable stream (a buffer allocated and shrunk per read, push, 'data', and a
 * maybeReadMore tick per read: 3-7 µs per read in a 1 KiB ping-pong, plaintext
 * or TLS; bench/README.md, "Upstream reads without the stream"). Sharing one
 * buffer is safe because each read is handed on synchronously on the one
 * thread: whoever keeps bytes past the call copies them (the connection copies
 * body chunks, the parser a head still incomplete).
 */

/** libuv asks for 64 KiB per read on a stream socket; the same here, so a read takes what it took before. */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * The buffer a sidecar's upstream HTTP/1.1 sockets read into, one per process: one per pool would keep
 * up to 64 KiB resident for each endpoint that ever sent a large response.
 */
export function createReadBuffer(): Buffer {
  return Buffer.allocUnsafe(READ_BUFFER_BYTES);
}

export class SocketReads {
  readonly onread: OnReadOpts;
  #sink: ((bytes: Buffer) => void) | undefined;
  #spokeFirst = false;

  /** `buffer`: the sidecar's read buffer (createReadBuffer), shared by all its upstream sockets. */
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
