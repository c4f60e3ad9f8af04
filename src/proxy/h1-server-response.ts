import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { nodeHttp as http } from '../core/node-builtins.ts';
import { isFieldText, isToken, keepsConnection } from './h1-message-parser.ts';
import type { H1Request } from './h1-server-request.ts';

/** What a response needs from its connection (./h1-server-connection.ts). */
export interface ResponseOwner {
  /** Whether the connection closes after this response (the caller asked, or the listener is draining). */
  closesAfter(): boolean;
  /** The response will not keep the connection open: framed by close, or a `connection: close` set on it. */
  closeAfter(): void;
  /** Everything of the response is written to the socket (on the tick after its end): the connection goes on. */
  ended(): void;
  /** Bytes of the response are being written: the connection is not idle. */
  sent(): void;
  /** The Date header's value, formatted once a second. */
  date(): string;
  /** `keep-alive: timeout=<idle seconds>` and its line end, sent on a response that keeps the connection. */
  readonly keepAliveField: string;
}

type Value = string | string[];
const EMPTY = Buffer.alloc(0);

function checkName(name: string): void {
  if (!isToken(name)) throw headerError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${name}"]`);
}

function checkValue(name: string, value: string): void {
  if (!isFieldText(value)) throw headerError('ERR_INVALID_CHAR', `Invalid character in header content ["${name}"]`);
}

function toBuffer(chunk: string | Uint8Array): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk);
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function headerError(code: string, message: string): Error {
  return Object.assign(new TypeError(message), { code });
}

// Node's event overloads, so a call on any DownstreamResponse (./downstream.ts) type-checks: declarations only.
export interface H1Response {
  on(event: 'close' | 'drain' | 'finish', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: 'pipe' | 'unpipe', listener: (src: Readable) => void): this;
  on(event: string | symbol, listener: (...args: unknown[]) => void): this;
  once(event: 'close' | 'drain' | 'finish', listener: () => void): this;
  once(event: 'error', listener: (error: Error) => void): this;
  once(event: 'pipe' | 'unpipe', listener: (src: Readable) => void): this;
  once(event: string | symbol, listener: (...args: unknown[]) => void): this;
  off(event: 'close' | 'drain' | 'finish', listener: () => void): this;
  off(event: 'error', listener: (error: Error) => void): this;
  off(event: 'pipe' | 'unpipe', listener: (src: Readable) => void): this;
  off(event: string | symbol, listener: (...args: unknown[]) => void): this;
}

/**
 * The response to an H1Request: the members of node:http's ServerResponse
 * meshgate writes with (statusCode, statusMessage, setHeader, writeHead,
 * write, end, addTrailers, headersSent, writableEnded, destroy; 'drain',
 * 'finish' and 'close'), and no others. Header names and values are checked as node checks them, so no
 * field from an app or a filter can split the response. The head is written
 * with the first bytes of the body (one system call): a body given whole to
 * `end` gets a Content-Length, a streamed one without is chunked.
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface above adds method signatures only (node's event overloads), no fields.
export class H1Response extends EventEmitter {
  statusCode = 200;
  statusMessage = '';
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  readonly req: H1Request;
  readonly socket: Socket;
  readonly #owner: ResponseOwner;
  readonly #fields = new Map<string, { name: string; value: Value }>();
  #trailers: Record<string, string> | undefined;
  /** Whether the head went to the socket, and how the body is framed. */
  #headWritten = false;
  #chunked = false;
  #noBody = false;
  #corked = false;
  #needDrain = false;
  #endReported = false;
  #closeEmitted = false;

  constructor(req: H1Request, socket: Socket, owner: ResponseOwner) {
    super();
    this.req = req;
    this.socket = socket;
    this.#owner = owner;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    if (this.headersSent) throw headerError('ERR_HTTP_HEADERS_SENT', 'Cannot set headers after they are sent to the client');
    checkName(name);
    let checked: Value;
    if (Array.isArray(value)) {
      checked = value.map(String);
      for (const one of checked) checkValue(name, one);
    } else {
      checked = String(value);
      checkValue(name, checked);
    }
    this.#fields.set(name.toLowerCase(), { name, value: checked });
    return this;
  }

  writeHead(statusCode: number, headers?: Record<string, string | number | readonly string[] | undefined>): this {
    if (this.headersSent) throw headerError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent to the client');
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999) throw Object.assign(new RangeError(`Invalid status code: ${statusCode}`), { code: 'ERR_HTTP_INVALID_STATUS_CODE' });
    if (headers) for (const name in headers) if (headers[name] !== undefined) this.setHeader(name, headers[name]!);
    this.statusCode = statusCode;
    this.headersSent = true;
    return this;
  }

  addTrailers(trailers: Record<string, string>): void {
    for (const name in trailers) {
      checkName(name);
      checkValue(name, trailers[name]!);
    }
    this.#trailers = { ...this.#trailers, ...trailers };
  }

  write(chunk: string | Uint8Array): boolean {
    if (this.writableEnded) return false;
    const ok = this.#send(toBuffer(chunk), false);
    if (!ok) this.#needDrain = true;
    return ok;
  }

  end(chunk?: string | Uint8Array): this {
    if (this.writableEnded) return this;
    const body = chunk === undefined ? undefined : toBuffer(chunk);
    if (!this.#headWritten && !this.#bodiless() && !this.#fields.has('content-length') && !this.#fields.has('transfer-encoding')) {
      // A body given whole has a length; node:http sets it too.
      this.#fields.set('content-length', { name: 'content-length', value: String(body?.length ?? 0) });
    }
    this.writableEnded = true;
    this.#send(body, true);
    return this;
  }

  destroy(err?: Error): this {
    this.socket.destroy(err);
    return this;
  }

  /** The connection's socket drained: a writer waiting on write()'s false goes on. */
  drained(): void {
    if (!this.#needDrain) return;
    this.#needDrain = false;
    this.emit('drain');
  }

  /** The connection closed before the response was whole. */
  closed(): void {
    if (this.writableFinished || this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.emit('close');
  }

  /** Writes the head (first time), `data` framed, and on `last` the end of the body; returns the socket's backpressure signal. */
  #send(data: Buffer | undefined, last: boolean): boolean {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      if (last) this.#finished();
      return false;
    }
    this.#owner.sent();
    // Corked until the end of this tick: head, body and the end of a chunked body leave in one writev.
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        socket.uncork();
        // The connection goes on once the end is flushed, on this same tick (one tick per response, not two).
        if (this.writableEnded && !this.#endReported) {
          this.#endReported = true;
          this.#owner.ended();
        }
      });
    }
    let ok = true;
    if (!this.#headWritten) ok = socket.write(this.#head(), 'latin1');
    if (data !== undefined && data.length > 0 && !this.#noBody) {
      if (this.#chunked) {
        socket.write(`${data.length.toString(16)}\r\n`, 'latin1');
        socket.write(data);
        ok = socket.write('\r\n', 'latin1');
      } else ok = socket.write(data);
    }
    if (last) {
      const done = (): void => this.#finished();
      if (this.#chunked) socket.write(`0\r\n${this.#trailerLines()}\r\n`, 'latin1', done);
      else socket.write(EMPTY, done);
    }
    return ok;
  }

  /** No body: HEAD, 204, 304 and 1xx (RFC 9110 §6.4.1); their framing fields are sent as set. */
  #bodiless(): boolean {
    const status = this.statusCode;
    return this.req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
  }

  #finished(): void {
    // Once closed early (the caller left), a later end finishes nothing: no 'finish' after 'close', as node.
    if (this.writableFinished || this.#closeEmitted) return;
    this.writableFinished = true;
    this.#closeEmitted = true;
    this.emit('finish');
    this.emit('close');
  }

  #trailerLines(): string {
    let lines = '';
    for (const name in this.#trailers) lines += `${name}: ${this.#trailers[name]}\r\n`;
    return lines;
  }

  #head(): string {
    this.#headWritten = true;
    this.headersSent = true;
    const status = this.statusCode;
    this.#noBody = this.#bodiless();
    const fields = this.#fields;
    // A reason phrase assigned directly (writeHead checks its own) must not split the head either.
    const phrase = this.statusMessage !== '' && isFieldText(this.statusMessage) ? this.statusMessage : http.STATUS_CODES[status] || 'unknown';
    let head = `HTTP/1.1 ${status} ${phrase}\r\n`;
    for (const { name, value } of fields.values()) {
      if (typeof value === 'string') head += `${name}: ${value}\r\n`;
      else for (const one of value) head += `${name}: ${one}\r\n`;
    }
    if (!fields.has('date')) head += `date: ${this.#owner.date()}\r\n`;
    if (!this.#noBody && !fields.has('content-length')) {
      const te = fields.get('transfer-encoding')?.value;
      if (te !== undefined) this.#chunked = String(te).toLowerCase().endsWith('chunked');
      else if (this.req.httpVersionMinor === 1) {
        this.#chunked = true;
        head += 'transfer-encoding: chunked\r\n';
      } else this.#owner.closeAfter(); // HTTP/1.0: the body ends when the connection does
    }
    const connection = fields.get('connection')?.value;
    if (connection !== undefined && !keepsConnection(connection, false)) this.#owner.closeAfter();
    else if (this.#owner.closesAfter()) {
      if (connection === undefined) head += 'connection: close\r\n';
    } else {
      if (this.req.httpVersionMinor === 0 && connection === undefined) head += 'connection: keep-alive\r\n';
      // As node:http did: a client that keeps the connection learns when we close it, and stops reusing it before.
      if (!fields.has('keep-alive')) head += this.#owner.keepAliveField;
    }
    return `${head}\r\n`;
  }
}
