import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { RequestHead } from './h1-request-head.ts';
import { ResponseParser, UpstreamProtocolError } from './h1-response-parser.ts';
import type { SocketReads } from './socket-reads.ts';
import { ControllerState } from './upstream-call.ts';

/*
 * One call and one connection of src/proxy/h1-pool.ts: the call is also the
 * controller its handler pauses, resumes and aborts; the connection writes the
 * call's request and feeds the upstream's bytes to the response parser.
 */

/** A socket closed or failed before the response was whole (a reset for retries and outlier detection). */
export class UpstreamClosedError extends Error {
  override readonly name = 'UpstreamClosedError';
  readonly code: string;
  constructor(message: string, code = 'UND_ERR_SOCKET') {
    super(message);
    this.code = code;
  }
}

/** A request body that may be had whole, as one buffer, instead of read as a stream (the listener's H1Request). */
interface WholeBody {
  /** The whole body if it is all here and nobody read from the stream yet; the stream then gives nothing more. */
  takeWhole(): Buffer | undefined;
}

/** The end of a chunked request body: the last chunk and no trailers. */
const LAST_CHUNK = '0\r\n\r\n';

/** Writes request body bytes, as one chunk when the body is chunk-encoded; returns the socket's backpressure signal. */
function writeBodyBytes(socket: Socket, bytes: Buffer, chunked: boolean): boolean {
  if (!chunked) return socket.write(bytes);
  socket.cork();
  socket.write(`${bytes.length.toString(16)}\r\n`, 'latin1');
  socket.write(bytes);
  const ok = socket.write('\r\n', 'latin1');
  socket.uncork();
  return ok;
}

/** A keep-alive hint is honoured less this margin, so the upstream never closes a connection the pool is about to use. */
const KEEP_ALIVE_MARGIN_MS = 1_000;

/** One request and its handler; also the controller the handler pauses, resumes and aborts. */
export class Call extends ControllerState implements Dispatcher.DispatchController {
  readonly opts: Dispatcher.DispatchOptions;
  readonly request: RequestHead;
  readonly handler: Dispatcher.DispatchHandler;
  #settled = false;
  /** The connection carrying the call, once it has one. */
  connection: Connection | undefined;
  readonly #unqueue: (call: Call) => void;

  constructor(opts: Dispatcher.DispatchOptions, request: RequestHead, handler: Dispatcher.DispatchHandler, unqueue: (call: Call) => void) {
    super();
    this.opts = opts;
    this.request = request;
    this.handler = handler;
    this.#unqueue = unqueue;
  }
  abort(reason: Error): void {
    if (this.#settled || this.abortReason) return;
    this.abortReason = reason;
    this.#unqueue(this);
    // The connection is mid-exchange: it cannot carry another request, so it goes.
    if (this.connection) this.connection.destroy(reason);
    else this.fail(reason);
  }
  pause(): void {
    this.pausedNow = true;
    this.connection?.pauseReading();
  }
  resume(): void {
    this.pausedNow = false;
    this.connection?.resumeReading();
  }
  /** Settles the call with an error, once; later events are dropped. */
  fail(err: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    this.handler.onResponseError?.(this, err);
  }
  end(trailers: Record<string, string | string[]>): void {
    if (this.#settled) return;
    this.#settled = true;
    this.handler.onResponseEnd?.(this, trailers);
  }
  get settled(): boolean {
    return this.#settled;
  }
}

export class Connection {
  readonly #socket: Socket;
  readonly #parser: ResponseParser;
  #call: Call | undefined;
  #bodySent = true;
  #reusable = false;
  #gone = false;
  #keepAliveHintMs: number | undefined;
  /** Why the upstream's bytes were refused; the call fails with it a moment later (see the 'data' handler). */
  #refusal: Error | undefined;
  #bodyTimer: NodeJS.Timeout | undefined;
  /** While idle in the pool: when it stops being reused (performance.now() ms). */
  #idleUntil = Number.POSITIVE_INFINITY;
  /** Stops sending the request body and lets the rest of it drain (the call ended first); set while it streams. */
  #dropBody: (() => void) | undefined;
  readonly #release: (conn: Connection) => void;
  readonly #forget: (conn: Connection) => void;

  constructor(socket: Socket, reads: SocketReads, maxHeadBytes: number, release: (conn: Connection) => void, forget: (conn: Connection) => void) {
    this.#socket = socket;
    this.#release = release;
    this.#forget = forget;
    socket.setNoDelay(true);
    this.#parser = new ResponseParser(
      {
        // A handler may abort its call from inside a callback (the response tap refuses a head or a chunk):
        // the connection is gone then, and what the parser still reads from this buffer goes nowhere.
        onHead: (status, headers, statusText) => {
          const call = this.#call;
          if (!call) return;
          const hint = headers['keep-alive'];
          if (typeof hint === 'string') {
            const seconds = /(?:^|,)\s*timeout\s*=\s*(\d+)/i.exec(hint)?.[1];
            if (seconds !== undefined) this.#keepAliveHintMs = Number(seconds) * 1000 - KEEP_ALIVE_MARGIN_MS;
          }
          // Silence between body chunks is bounded from the head on; before it, meshgate's route deadlines apply.
          const bodyTimeoutMs = call.opts.bodyTimeout ?? 0;
          if (bodyTimeoutMs > 0) {
            this.#bodyTimer = setTimeout(() => this.destroy(new UpstreamClosedError('the response body stalled', 'UND_ERR_BODY_TIMEOUT')), bodyTimeoutMs);
            this.#bodyTimer.unref();
          }
          call.handler.onResponseStart?.(call, status, headers, statusText);
          if (call.paused) this.pauseReading();
        },
        onData: (chunk) => {
          const call = this.#call;
          if (!call) return;
          this.#bodyTimer?.refresh();
          call.handler.onResponseData?.(call, chunk);
        },
        onEnd: (trailers, reusable) => {
          this.#reusable = reusable;
          this.#finish(trailers);
        },
      },
      maxHeadBytes,
    );
    reads.deliverTo((chunk) => {
      if (this.#refusal) return;
      if (!this.#call) {
        // Nothing was asked: an idle upstream that speaks first is not one to reuse.
        this.destroy(new UpstreamProtocolError('bytes from the upstream while no request was in flight'));
        return;
      }
      try {
        this.#parser.execute(chunk);
      } catch (err) {
        // What came before the bad bytes was handed on in this same tick and still sits in the caller's
        // socket buffer: failing the call after it is written lets the caller see it, then the reset.
        this.#refusal = err as Error;
        socket.pause();
        setImmediate(() => this.destroy(err as Error));
      }
    });
    socket.on('end', () => {
      // The upstream half-closed: an until-close body ends here; anything else unfinished failed.
      if (this.#call && this.#parser.readsUntilClose) this.#parser.close();
      this.destroy(new UpstreamClosedError('the upstream closed the connection'));
    });
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy(new UpstreamClosedError('the upstream closed the connection')));
  }

  send(call: Call): void {
    if (call.aborted) return this.#release(this);
    this.#call = call;
    call.connection = this;
    this.#reusable = false;
    const { opts } = call;
    const { head, chunked } = call.request;
    this.#parser.expect(opts.method === 'HEAD');
    if (call.paused) this.pauseReading();
    const body = opts.body as (Readable & Partial<WholeBody>) | null | undefined;
    if (body === null || body === undefined) {
      this.#bodySent = true;
      this.#socket.write(head, 'latin1'); // field bytes as node:http read them (latin1), as undici writes them
      return;
    }
    const whole = body.takeWhole?.();
    if (whole !== undefined) {
      // Head and body in one write, without the stream's events (most request bodies are this small).
      this.#bodySent = true;
      const socket = this.#socket;
      socket.cork();
      socket.write(head, 'latin1');
      writeBodyBytes(socket, whole, chunked);
      if (chunked) socket.write(LAST_CHUNK, 'latin1');
      socket.uncork();
      return;
    }
    this.#bodySent = false;
    this.#socket.cork();
    this.#socket.write(head, 'latin1'); // field bytes as node:http read them (latin1), as undici writes them
    this.#stream(body, chunked);
    process.nextTick(() => this.#socket.uncork());
  }

  /** Sends the request body with backpressure, chunk-encoded when its length is not declared. */
  #stream(body: Readable, chunked: boolean): void {
    const socket = this.#socket;
    const onDrain = (): void => {
      body.resume();
    };
    // Listeners go (cleanup) before the call leaves this connection: #finish runs once the body ended, destroy drops it.
    const onData = (chunk: Buffer): void => {
      if (chunked && chunk.length === 0) return;
      if (!writeBodyBytes(socket, chunk, chunked)) body.pause();
    };
    const cleanup = (): void => {
      this.#dropBody = undefined;
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
      body.off('close', onClose);
      socket.off('drain', onDrain);
    };
    const onEnd = (): void => {
      cleanup();
      if (chunked) socket.write(LAST_CHUNK, 'latin1');
      this.#bodySent = true;
      // The response may have ended first (an early 413): the connection waited for the body.
      if (this.#parser.done) this.#finish(undefined);
    };
    const onError = (err: Error): void => {
      cleanup();
      this.destroy(err);
    };
    const onClose = (): void => {
      if (!body.readableEnded) onError(new UpstreamClosedError('the request body ended early', 'UND_ERR_ABORTED'));
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    body.once('close', onClose);
    socket.on('drain', onDrain);
    // A body held back by this connection's backpressure would otherwise stay paused, and the caller's
    // connection with it, until a request timeout: node:http reads and drops the rest, as for any body
    // nobody reads.
    this.#dropBody = () => {
      cleanup();
      body.resume();
    };
  }

  #finish(trailers: Record<string, string | string[]> | undefined): void {
    const call = this.#call;
    if (!call) return;
    if (trailers !== undefined) call.end(trailers);
    if (!this.#bodySent) {
      // The upstream answered before the request body was sent: this connection's framing is unknown now.
      if (trailers !== undefined) this.destroy(new UpstreamClosedError('answered before the request body ended'));
      return;
    }
    clearTimeout(this.#bodyTimer);
    this.#bodyTimer = undefined;
    call.connection = undefined;
    this.#call = undefined;
    if (!this.#reusable || this.#gone) return this.destroy(undefined);
    this.resumeReading();
    this.#release(this);
  }

  /**
   * The connection went idle at `now` (performance.now() ms): it may carry
   * another call until its keep-alive time is up, or the upstream's hint if
   * shorter. The pool checks `expired` when it takes it and in its sweep
   * (why not a socket timeout: ./h1-pool.ts). False when it closed at once.
   */
  idleSince(now: number, keepAliveTimeoutMs: number): boolean {
    const hint = this.#keepAliveHintMs;
    const ms = hint !== undefined && hint < keepAliveTimeoutMs ? hint : keepAliveTimeoutMs;
    if (ms <= 0) {
      this.destroy(undefined);
      return false;
    }
    this.#idleUntil = now + ms;
    return true;
  }

  expired(now: number): boolean {
    return now >= this.#idleUntil;
  }

  pauseReading(): void {
    this.#socket.pause();
  }
  resumeReading(): void {
    this.#socket.resume();
  }

  destroy(err: Error | undefined): void {
    if (this.#gone) return;
    this.#gone = true;
    err = this.#refusal ?? err;
    clearTimeout(this.#bodyTimer);
    const call = this.#call;
    this.#call = undefined;
    this.#dropBody?.();
    this.#socket.destroy();
    this.#forget(this);
    if (call && !call.settled) call.fail(err ?? new UpstreamClosedError('the connection closed'));
  }
}
