import type { Socket } from 'node:net';
import type { ReasonCode } from '../core/reason-codes.ts';
import { replyRaw } from '../errors/raw-reply.ts';
import { HEAD_TIMED_OUT } from './connection-guard.ts';
import { DownstreamRefusedError, DownstreamTimeoutError, markRefused } from './downstream.ts';
import type { RequestHead, RequestSink } from './h1-request-parser.ts';
import { RequestFramingError, RequestParser } from './h1-request-parser.ts';
import type { BodySource } from './h1-server-request.ts';
import { H1Request } from './h1-server-request.ts';
import type { ResponseOwner } from './h1-server-response.ts';
import { H1Response } from './h1-server-response.ts';
import { readWithoutStream } from './socket-reads.ts';

/*
 * The HTTP/1.1 side of a listener, in place of node:http's server (why:
 * ./h1-request-parser.ts). One request at a time per connection: bytes of a
 * pipelined request wait (the socket paused) until the response before it
 * ended, so a caller cannot open more calls on one connection than one, and
 * responses leave in order by construction.
 */

export interface H1ServerLimits {
  readonly maxHeaderSize: number;
  readonly maxHeadersCount: number;
  /** From the first byte of a request head after the first (the listener times the first) to its end. */
  readonly headersTimeout: number;
  /** From the first byte of a request to its last. */
  readonly requestTimeout: number;
  /** No byte either way for this long: idle keep-alive connections close, calls in flight end as meshgate's timeout. */
  readonly idleTimeout: number;
}

export interface H1ServerHooks {
  onRequest(req: H1Request, res: H1Response): void;
  /** A request refused before it became a call (framing, size, a head that did not arrive in time): answer, log and close. */
  refuse(socket: Socket, refusal: { code: ReasonCode<'data'>; reason: string }): void;
}

export interface H1Server {
  /** Takes a connection over; `onFirstHead` runs once its first request head is in. */
  serve(socket: Socket, onFirstHead?: () => void): void;
  /** Draining: connections between requests close now, the others after their current response (which says `connection: close`). */
  drain(): void;
}

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

/** `readBuffer`: what its connections read into, one read at a time (./socket-reads.ts, readWithoutStream). */
export function createH1Server(limits: H1ServerLimits, hooks: H1ServerHooks, readBuffer: Buffer): H1Server {
  const connections = new Set<H1ServerConnection>();
  let closing = false;
  let dateSecond = -1;
  let dateText = '';
  let sweep: NodeJS.Timeout | undefined;
  const shared: ConnectionShared = {
    limits,
    hooks,
    readBuffer,
    keepAliveField: `keep-alive: timeout=${Math.floor(limits.idleTimeout / 1000)}\r\n`,
    closing: () => closing,
    date() {
      const now = Date.now();
      const second = Math.floor(now / 1000);
      if (second !== dateSecond) {
        dateSecond = second;
        dateText = new Date(now).toUTCString();
      }
      return dateText;
    },
    gone(connection) {
      connections.delete(connection);
      if (connections.size === 0 && sweep !== undefined) {
        clearInterval(sweep);
        sweep = undefined;
      }
    },
  };
  // One timer for every connection's head, request and idle deadlines (as node's connectionsCheckingInterval), running
  // while any is open. The idle deadline is here rather than a socket timeout: node re-arms that on every read and
  // write, three timer-list updates per request (~1.5% of a one-hop sidecar's CPU in a perf profile), where this
  // is a clock read; it fires up to a tenth of the shorter timeout late (at most a second).
  const interval = Math.min(1_000, Math.max(25, Math.floor(Math.min(limits.headersTimeout, limits.idleTimeout) / 10)));
  return {
    serve(socket, onFirstHead) {
      const connection = new H1ServerConnection(socket, shared, onFirstHead);
      connections.add(connection);
      sweep ??= setInterval(() => {
        const now = Date.now();
        for (const c of connections) c.checkDeadlines(now);
      }, interval).unref();
      connection.start();
    },
    drain() {
      closing = true;
      for (const c of connections) c.closeIfIdle();
    },
  };
}

interface ConnectionShared {
  readonly limits: H1ServerLimits;
  readonly hooks: H1ServerHooks;
  readonly readBuffer: Buffer;
  readonly keepAliveField: string;
  closing(): boolean;
  date(): string;
  gone(connection: H1ServerConnection): void;
}

class H1ServerConnection implements RequestSink, ResponseOwner, BodySource {
  readonly #socket: Socket;
  readonly #shared: ConnectionShared;
  readonly #parser: RequestParser;
  #onFirstHead: (() => void) | undefined;
  #req: H1Request | undefined;
  #res: H1Response | undefined;
  /** Bytes after the current request, held (the socket paused) until its response ended. */
  #held: Buffer | undefined;
  #keepAlive = true;
  #closeAfter = false;
  /** The response ended before its request's body did: the rest of the body is read and dropped. */
  #dropping = false;
  /** The reader of the body asked us to wait (its buffer is full). */
  #bodyPaused = false;
  #broken = false;
  #headStartedAt = 0;
  #requestStartedAt = 0;
  /** The last byte either way (Date.now()): limits.idleTimeout counts from here. */
  #lastActive = Date.now();

  constructor(socket: Socket, shared: ConnectionShared, onFirstHead: (() => void) | undefined) {
    this.#socket = socket;
    this.#shared = shared;
    this.#onFirstHead = onFirstHead;
    this.#parser = new RequestParser(this, shared.limits);
  }

  start(): void {
    const socket = this.#socket;
    const onData = (chunk: Buffer): void => this.#onData(chunk);
    // 'data' for what the stream holds already (the first bytes, read to route the connection); the rest is read into
    // the listeners' shared buffer, so what is kept past a read is copied: by the parser what it hands on or keeps
    // (H1MessageParser.execute), here the bytes #hold keeps.
    socket.on('data', onData);
    readWithoutStream(socket, this.#shared.readBuffer, onData);
    socket.on('drain', () => {
      this.#lastActive = Date.now();
      this.#res?.drained();
    });
    // Errors end in 'close' (our own timeouts destroy the socket with one); nothing to add here.
    socket.on('error', () => {});
    socket.once('close', () => this.#onClose());
    socket.resume();
  }

  // ---- RequestSink: the parser's events.

  onHead(head: RequestHead): void {
    if (this.#onFirstHead) {
      this.#onFirstHead();
      this.#onFirstHead = undefined;
    }
    const socket = this.#socket;
    this.#requestStartedAt = this.#headStartedAt || Date.now();
    this.#headStartedAt = 0;
    this.#keepAlive = head.keepAlive;
    const req = new H1Request(head, socket, this);
    const res = new H1Response(req, socket, this);
    this.#req = req;
    this.#res = res;
    // As node:http without a checkContinue listener: the caller may send its body right away.
    if (head.expectsContinue) socket.write(CONTINUE, 'latin1');
    this.#shared.hooks.onRequest(req, res);
  }

  onBody(chunk: Buffer): void {
    if (this.#dropping) return;
    if (!this.#req!.received(chunk)) {
      this.#bodyPaused = true;
      this.#socket.pause();
    }
  }

  onComplete(): void {
    this.#requestStartedAt = 0;
    const req = this.#req!;
    req.complete = true;
    if (this.#dropping) {
      this.#nextRequest();
      return;
    }
    req.ended();
  }

  // ---- ResponseOwner: the response's questions and its end.

  closesAfter(): boolean {
    return this.#closeAfter || !this.#keepAlive || this.#shared.closing();
  }

  closeAfter(): void {
    this.#closeAfter = true;
  }

  sent(): void {
    this.#lastActive = Date.now();
  }

  ended(): void {
    // Called on the tick after the response's end, with its bytes flushed (it may have ended inside the parser's onHead).
    this.#afterResponse();
  }

  date(): string {
    return this.#shared.date();
  }

  get keepAliveField(): string {
    return this.#shared.keepAliveField;
  }

  // ---- The connection's own steps.

  #onData(chunk: Buffer): void {
    this.#lastActive = Date.now();
    // Refused (or answered 408 by the listener's first-head deadline, which ends the socket): nothing more is read.
    if (this.#broken || !this.#socket.writable) return;
    // The current request is whole and its response not yet ended: a pipelined request waits.
    if (this.#parser.done) {
      this.#hold(chunk);
      return;
    }
    this.#feed(chunk);
  }

  #feed(chunk: Buffer): void {
    if (this.#req === undefined && this.#headStartedAt === 0 && this.#onFirstHead === undefined) this.#headStartedAt = Date.now();
    let rest: Buffer | undefined;
    try {
      rest = this.#parser.execute(chunk);
    } catch (err) {
      if (!(err instanceof RequestFramingError)) throw err;
      this.#refused(err);
      return;
    }
    if (rest !== undefined) this.#hold(rest);
  }

  #hold(chunk: Buffer): void {
    this.#held = this.#held === undefined ? Buffer.from(chunk) : Buffer.concat([this.#held, chunk]);
    this.#socket.pause();
  }

  bodyWanted(): void {
    if (!this.#bodyPaused) return;
    this.#bodyPaused = false;
    if (this.#held === undefined && !this.#broken) this.#socket.resume();
  }

  #afterResponse(): void {
    const socket = this.#socket;
    if (socket.destroyed || this.#broken) return;
    if (this.closesAfter()) {
      this.#broken = true;
      socket.end();
      return;
    }
    if (!this.#parser.done) {
      // The body of a request already answered: read to its end (bounded by requestTimeout), then the next request.
      this.#dropping = true;
      this.#bodyPaused = false;
      socket.resume();
      return;
    }
    this.#nextRequest();
  }

  #nextRequest(): void {
    this.#req = undefined;
    this.#res = undefined;
    this.#dropping = false;
    this.#bodyPaused = false;
    this.#parser.next();
    const held = this.#held;
    this.#held = undefined;
    this.#socket.resume();
    if (held !== undefined) this.#feed(held);
  }

  /** The caller's bytes broke HTTP/1.1 framing: refused, and nothing after them is read. */
  #refused(err: RequestFramingError): void {
    this.#broken = true;
    const socket = this.#socket;
    const res = this.#res;
    if (res === undefined) {
      this.#shared.hooks.refuse(socket, { code: err.reasonCode, reason: err.message });
      return;
    }
    if (res.writableEnded) {
      socket.destroy(); // the body of a call already answered
      return;
    }
    // The body of a call in flight did not parse: answered here, logged and counted once by the call (./downstream.ts).
    markRefused(socket, new DownstreamRefusedError(err.reasonCode, err.message));
    if (res.headersSent || !replyRaw(socket, err.reasonCode, err.message, this.#shared.limits.headersTimeout)) socket.destroy();
    this.#req?.destroy(new Error(err.message));
  }

  checkDeadlines(now: number): void {
    if (this.#socket.destroyed) return;
    const limits = this.#shared.limits;
    // Set from the first byte after a request until the next head is in, empty lines before it included.
    if (this.#headStartedAt !== 0 && now - this.#headStartedAt >= limits.headersTimeout) {
      this.#headStartedAt = 0;
      this.#broken = true;
      this.#shared.hooks.refuse(this.#socket, HEAD_TIMED_OUT);
      return;
    }
    if (this.#requestStartedAt !== 0 && now - this.#requestStartedAt >= limits.requestTimeout) {
      this.#requestStartedAt = 0;
      const res = this.#res;
      // With a call in flight it is meshgate's timeout, logged by the call; after its response, the connection just closes.
      if (res !== undefined && !res.writableEnded) this.#socket.destroy(new DownstreamTimeoutError('request'));
      else this.#socket.destroy();
      return;
    }
    if (now - this.#lastActive >= limits.idleTimeout) this.#onIdle();
  }

  #onIdle(): void {
    const res = this.#res;
    if (res !== undefined && !res.writableEnded) this.#socket.destroy(new DownstreamTimeoutError(this.#req!.complete ? 'response' : 'request'));
    else this.#socket.destroy();
  }

  closeIfIdle(): void {
    if (this.#req === undefined && !this.#parser.inHead) this.#socket.destroy();
  }

  #onClose(): void {
    this.#shared.gone(this);
    const req = this.#req;
    if (req !== undefined && !req.complete && !req.destroyed) req.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    this.#res?.closed();
  }
}
