import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { RequestHead } from './h1-request-parser.ts';

/** Where a request's body comes from: asked for more once its reader drained what it had. */
export interface BodySource {
  bodyWanted(): void;
}

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
  readonly httpVersionMinor: number;
  readonly socket: Socket;
  /** The whole body arrived. */
  complete = false;
  /** Body bytes received from the caller so far (the access log's bytes_in), whoever reads them. */
  bodyBytes = 0;
  readonly #source: BodySource;
  /** The whole body, when it came with the head: handed on as one buffer (takeWhole) or pushed when a reader asks. */
  #whole: Buffer | undefined;
  /** A reader asked for bytes (the next ones go straight to it). */
  #asked = false;
  /** The request has no body and no reader asked yet: its end is pushed when one does. */
  #endWhenAsked = false;
  /** takeWhole handed the body on. */
  #taken = false;

  constructor(head: RequestHead, socket: Socket, source: BodySource) {
    // Body chunks are handed on as they arrived, so 64 KiB as node:http's IncomingMessage.
    super({ highWaterMark: 64 * 1024 });
    this.method = head.method;
    this.url = head.url;
    this.headers = head.headers;
    this.rawHeaders = head.rawHeaders;
    this.httpVersionMinor = head.minorVersion;
    this.httpVersion = head.minorVersion === 1 ? '1.1' : '1.0';
    this.socket = socket;
    this.#source = source;
    this.#whole = head.wholeBody;
    if (head.wholeBody !== undefined) this.bodyBytes = head.wholeBody.length;
  }

  /** Body bytes from the connection, in order; false when the reader's buffer is full. */
  received(chunk: Buffer): boolean {
    this.bodyBytes += chunk.length;
    return this.push(chunk);
  }

  /**
   * The whole body as one buffer, if it came with the head and no reader has
   * asked for it: the upstream connection writes it with the request head
   * (one write, no stream events per call). The stream then ends empty for
   * anyone who reads it later.
   */
  takeWhole(): Buffer | undefined {
    const whole = this.#whole;
    if (whole === undefined || this.#asked) return undefined;
    this.#whole = undefined;
    this.#taken = true;
    return whole;
  }

  /**
   * The whole body, if it came with the head and nobody read or took it, left where it is: a filter
   * reads it in place (./request-body.ts) and the upstream connection still takes it whole.
   */
  peekWhole(): Buffer | undefined {
    return this.#asked ? undefined : this.#whole;
  }

  /** A reader asked for the body, or took it whole: what the stream's own state does not show (takeWhole emits nothing). */
  get readStarted(): boolean {
    return this.#taken || this.#asked;
  }

  /**
   * The body is over. Most requests have none and nobody reads them: ending
   * the stream then would schedule its 'end' for no one, on every call.
   */
  ended(): void {
    if (this.#asked || this.readableLength > 0) this.push(null);
    else this.#endWhenAsked = true;
  }

  override _read(): void {
    const whole = this.#whole;
    if (whole !== undefined) {
      this.#whole = undefined;
      this.push(whole);
    }
    if (this.#endWhenAsked) {
      this.#endWhenAsked = false;
      this.push(null);
      return;
    }
    this.#asked = true;
    this.#source.bodyWanted();
  }

  /** As node's IncomingMessage: an error (the caller left mid-body) is only emitted to a reader that listens for one. */
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    process.nextTick(() => callback(this.listenerCount('error') > 0 ? err : null));
  }
}
