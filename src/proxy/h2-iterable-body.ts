import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';

/**
 * Why this exists (issue #10, defect 1): Node's HTTP/2 client spins forever in
 * native code (Http2Session::SendPendingData -> CopyDataIntoOutgoing, RSS
 * growing by hundreds of MB/s, the event loop never back) when a request
 * stream that has a body attached with stream.pipeline() is closed before its
 * HEADERS frame left. undici attaches Readable bodies with pipeline() and, when
 * one of many queued requests starts while a caller drops hundreds of streams
 * at once, aborts it in the same turn: that is exactly the trigger. Seen on
 * Node 24.21 and 26.10 with undici 8.13; a plain Node client reproduces it in
 * ten lines, so no undici or Node upgrade available here fixes it.
 *
 * undici writes an async-iterable body with plain write() calls instead of
 * pipeline(), which never hangs. This interceptor hands every Readable body to
 * the HTTP/2 dispatcher as an async iterable that stops when the request fails.
 * Written by hand because a Readable's own iterator cannot be stopped while it
 * waits for a chunk, and ending it by destroying the source would destroy the
 * caller's stream too.
 */
export function iterableRequestBodies(dispatch: Dispatcher['dispatch']): Dispatcher['dispatch'] {
  return (opts, handler) => {
    const source = opts.body;
    if (!(source instanceof Readable)) return dispatch(opts, handler);
    const chunks = new SourceChunks(source);
    // undici accepts async iterables as bodies (client-h2.js writeIterable); its types list only Readable.
    return dispatch({ ...opts, body: chunks as unknown as Readable }, new StopBodyOnError(handler, chunks));
  };
}

/**
 * The source's chunks as an async iterator that can be stopped from outside.
 * A failed request stops it instead of destroying the source: the source is
 * the caller's request, whose stream must live on to carry the error reply
 * (a 504 after a timeout, not a reset). What the caller still sends is
 * discarded, as node:http does with a body nobody reads.
 */
class SourceChunks implements AsyncIterableIterator<Buffer> {
  readonly #source: Readable;
  #waiting: { resolve: (r: IteratorResult<Buffer>) => void; reject: (err: Error) => void } | undefined;
  #failure: Error | undefined;
  #ended = false;

  constructor(source: Readable) {
    this.#source = source;
    source.on('readable', this.#wake);
    source.on('end', this.#onEnd);
    source.on('error', this.#onError);
    source.on('close', this.#onClose);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.#failure) return Promise.reject(this.#failure);
    const chunk = this.#source.read() as Buffer | null;
    if (chunk !== null) return Promise.resolve({ value: chunk, done: false });
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.#waiting = { resolve, reject }));
  }

  /** undici calls this only when it leaves the loop early; the request has failed then. */
  return(): Promise<IteratorResult<Buffer>> {
    this.stop(new Error('request body no longer wanted'));
    return Promise.resolve({ value: undefined, done: true });
  }

  stop(reason: Error): void {
    if (this.#failure || this.#ended) return;
    this.#fail(reason);
    this.#source.resume();
  }

  readonly #wake = (): void => {
    const waiting = this.#waiting;
    if (!waiting) return;
    const chunk = this.#source.read() as Buffer | null;
    if (chunk === null) return;
    this.#waiting = undefined;
    waiting.resolve({ value: chunk, done: false });
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#detach();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.resolve({ value: undefined, done: true });
  };

  readonly #onError = (err: Error): void => this.#fail(err);

  readonly #onClose = (): void => {
    if (!this.#ended) this.#fail(Object.assign(new Error('request body closed before its end'), { code: 'UND_ERR_ABORTED' }));
  };

  #fail(err: Error): void {
    this.#failure ??= err;
    this.#detach();
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(this.#failure);
  }

  #detach(): void {
    this.#source.off('readable', this.#wake);
    this.#source.off('end', this.#onEnd);
    this.#source.off('close', this.#onClose);
    // The 'error' listener stays: an error after we stopped must not become an uncaught exception.
  }
}

/** Passes every event through; on a failure, stops the body iterator so it waits on nothing. */
class StopBodyOnError implements Dispatcher.DispatchHandler {
  readonly #inner: Dispatcher.DispatchHandler;
  readonly #chunks: SourceChunks;

  constructor(inner: Dispatcher.DispatchHandler, chunks: SourceChunks) {
    this.#inner = inner;
    this.#chunks = chunks;
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.#inner.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, socket: Duplex): void {
    this.#inner.onRequestUpgrade?.(controller, statusCode, headers, socket);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    this.#inner.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#inner.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[]>): void {
    this.#inner.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    this.#chunks.stop(error);
    this.#inner.onResponseError?.(controller, error);
  }
}
