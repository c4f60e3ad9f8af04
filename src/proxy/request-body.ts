import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import type { BodyRead, RequestBody } from '../core/call-context.ts';
import type { BodyBudget } from './body-budget.ts';
import { requestBody } from './call.ts';
import { requestRefused, requestTimedOut } from './downstream.ts';
import type { DownstreamRequest } from './listener.ts';

/** The stack's side of a call's body: filters see `RequestBody`, the stack also forwards it. */
export interface ForwardableBody extends RequestBody {
  /**
   * What to send upstream: the live stream when no filter read the body (it
   * keeps streaming with backpressure); otherwise the bytes read, then the
   * unread rest of the stream. Call once, after the filter chain.
   */
  forwardable(): Readable | null;
}

const EMPTY: BodyRead = Object.freeze({ kind: 'complete', bytes: Buffer.alloc(0) });

/** Shared by every call without a body: nothing to read, nothing allocated per call. */
const NO_BODY: ForwardableBody = Object.freeze({
  present: false,
  declaredLength: undefined,
  read: () => Promise.resolve(EMPTY),
  readNow: () => EMPTY,
  forwardable: () => null,
});

/** A body that may be read where it is when it came whole with its head (the listener's H1Request). */
interface WholeBodySource {
  peekWhole?(): Buffer | undefined;
}

/**
 * Lazily buffered request body. Nothing is read unless a filter calls `read`,
 * so calls no rule needs the body of stay streaming. `read` stops at the
 * first chunk beyond the limit and pauses the stream there: at most `limit`
 * plus one codec chunk (64 KiB for HTTP/1.1, a DATA frame for HTTP/2) is held.
 * A body that came whole with its head is read where it is (readInPlace).
 */
export function createRequestBody(
  req: DownstreamRequest,
  /** Shared by every call of the sidecar (limits.maxBufferedBodies); unbounded without. */
  budget?: BodyBudget,
  /** Emits 'close' when the call is over (the response): bytes this call holds go back to `budget` then. */
  callEnd?: { once(event: 'close', listener: () => void): unknown },
): ForwardableBody {
  const live = requestBody(req);
  if (live === null) return NO_BODY;
  let reserved = 0;
  let releaseScheduled = false;
  // Registered only once bytes are held, so calls whose body no filter reads add no listener.
  const reserve = (bytes: number): boolean => {
    if (!budget) return true;
    if (!budget.reserve(bytes)) return false;
    reserved += bytes;
    if (!releaseScheduled) {
      releaseScheduled = true;
      callEnd?.once('close', () => budget.release(reserved));
    }
    return true;
  };
  const declaredLength = declaredLengthOf(req.headers);
  let result: Promise<BodyRead> | undefined;
  /** The read's outcome once known: at once for a body read in place. */
  let settled: BodyRead | undefined;
  // Invariant: `chunks` holds every byte consumed from `live` until forwardable() hands them on.
  let chunks: Buffer[] = [];
  let state: 'untouched' | 'reading' | 'complete' | 'partial' | 'failed' = 'untouched';

  const failure = (reason: string): BodyRead => {
    const refused = requestRefused(req);
    if (refused) return { kind: 'failed', reason: refused.message, refused: refused.reasonCode };
    return requestTimedOut(req) ? { kind: 'failed', reason: 'the request body did not arrive in time', timedOut: true } : { kind: 'failed', reason };
  };
  const readOnce = (source: Readable, limit: number): Promise<BodyRead> =>
    new Promise<BodyRead>((resolve) => {
      let received = 0;
      const settle = (next: typeof state, outcome: BodyRead): void => {
        source.off('data', onData);
        source.off('end', onEnd);
        source.off('error', onError);
        source.off('close', onClose);
        state = next;
        settled = outcome;
        resolve(outcome);
      };
      const onData = (chunk: Buffer): void => {
        if (!reserve(chunk.length)) {
          // Kept and forwarded if the call goes on, but not counted: it was already in memory.
          chunks.push(chunk);
          source.pause();
          settle('partial', { kind: 'over_budget' });
          return;
        }
        received += chunk.length;
        chunks.push(chunk);
        if (received > limit) {
          source.pause();
          settle('partial', { kind: 'too_large', received });
        }
      };
      const onEnd = (): void => {
        const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        chunks = [bytes];
        settle('complete', { kind: 'complete', bytes });
      };
      const onError = (err: Error): void => settle('failed', failure(err.message));
      // A reset caller closes the request without 'end' (and without 'error' on HTTP/2).
      const onClose = (): void => settle('failed', failure('the caller closed the request before its body ended'));
      state = 'reading';
      source.on('data', onData);
      source.once('end', onEnd);
      source.once('error', onError);
      source.once('close', onClose);
    });

  /**
   * Settles the first read at once when it needs no waiting (true then): a declared length above the
   * limit (refused without reading a byte), or a body that came whole with its head, read where it is.
   * Nothing is taken from the stream then (its state stays untouched), so forwardable() hands on the
   * request itself and the upstream connection writes the body with the head, as for a call no filter
   * read; the bytes count in the budget as those read from the stream do.
   */
  const readInPlace = (limit: number): boolean => {
    let now: BodyRead;
    if (declaredLength !== undefined && declaredLength > limit) now = { kind: 'too_large', received: 0 };
    else {
      const whole = (live as WholeBodySource).peekWhole?.();
      if (whole === undefined) return false;
      // A whole body has a Content-Length, checked above; its own length is checked all the same.
      if (!reserve(whole.length)) now = { kind: 'over_budget' };
      else now = whole.length > limit ? { kind: 'too_large', received: whole.length } : { kind: 'complete', bytes: whole };
    }
    settled = now;
    result = Promise.resolve(now);
    return true;
  };

  return {
    present: live !== null,
    declaredLength,
    read(limit) {
      if (result === undefined && !readInPlace(limit)) result = readOnce(live, limit);
      return result!;
    },
    readNow(limit) {
      if (result === undefined) readInPlace(limit);
      return settled;
    },
    forwardable() {
      if (state === 'untouched') return live;
      if (state === 'complete') {
        const bytes = chunks[0]!;
        chunks = [];
        if (bytes.length === 0) return null;
        const out = new PassThrough();
        out.end(bytes);
        return out;
      }
      // Partial (or failed): what was read, then the rest of the live stream, errors passed on.
      const out = new PassThrough();
      for (const chunk of chunks) out.write(chunk);
      chunks = [];
      if (state === 'failed') {
        out.destroy(new Error('request body failed'));
        return out;
      }
      live.once('error', (err) => out.destroy(err));
      live.once('close', () => {
        if (!live.readableEnded) out.destroy(new Error('the caller closed the request before its body ended'));
      });
      live.pipe(out);
      return out;
    },
  };
}

/** The Content-Length a request head declares; undefined when chunked or absent. Also used by `policy explain`. */
export function declaredLengthOf(headers: IncomingHttpHeaders): number | undefined {
  // Chunked wins over a Content-Length on HTTP/1.1 (RFC 9112 §6.3); node:http refuses the pair anyway.
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const value = headers['content-length'];
  if (value === undefined || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}
