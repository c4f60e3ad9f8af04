import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { RequestHead } from './h1-request-parser.ts';

/**
 * An HTTP/1.1 request as the listener hands it to the stacks: the members of
 * node:http's IncomingMessage meshgate reads (method, url, headers,
 * rawHeaders, httpVersion, socket, complete), and its body as a Readable. The
 * connection (./h1-server-connection.ts) pushes body bytes in and resumes the
 * socket when the reader asks for more, so a slow reader slows the caller.
 */
export class H1Request extends Readable {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[]>;
  readonly rawHeaders: string[];
  readonly httpVersion: '1.1' | '1.0';
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor: number;
  readonly socket: Socket;
  /** The whole body arrived. */
  complete = false;
  readonly #wantMore: () => void;

  constructor(head: RequestHead, socket: Socket, wantMore: () => void) {
    // Body chunks are handed on as they arrived, so 64 KiB as node:http's IncomingMessage.
    super({ highWaterMark: 64 * 1024 });
    this.method = head.method;
    this.url = head.url;
    this.headers = head.headers;
    this.rawHeaders = head.rawHeaders;
    this.httpVersionMinor = head.minorVersion;
    this.httpVersion = head.minorVersion === 1 ? '1.1' : '1.0';
    this.socket = socket;
    this.#wantMore = wantMore;
  }

  override _read(): void {
    this.#wantMore();
  }

  /** As node's IncomingMessage: an error (the caller left mid-body) is only emitted to a reader that listens for one. */
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    process.nextTick(() => callback(this.listenerCount('error') > 0 ? err : null));
  }
}
