import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { H1Request } from './h1-server-request.ts';
import type { H1Response } from './h1-server-response.ts';
import { NGHTTP2_INTERNAL_ERROR } from './h2-error-codes.ts';

/**
 * A call as either codec hands it over: meshgate's own for HTTP/1.1
 * (./h1-server-connection.ts), node's for HTTP/2. node:http's own pair is
 * accepted too (the shape meshgate's HTTP/1.1 objects keep), so a stack can
 * also be mounted on a plain node:http server.
 */
export type DownstreamRequest = H1Request | IncomingMessage | Http2ServerRequest;
export type DownstreamResponse = H1Response | ServerResponse | Http2ServerResponse;

/**
 * The listener closes a connection (HTTP/1.1) or stream (HTTP/2) with this
 * error when one of its own timers fired while a call was in flight, so the
 * call is logged as meshgate's timeout rather than as a caller that left.
 */
export class DownstreamTimeoutError extends Error {
  override readonly name = 'DownstreamTimeoutError';
  readonly code = 'MESHGATE_DOWNSTREAM_TIMEOUT';
  /** request: the caller had not sent its whole request; response: the call was waiting for, or relaying, the upstream. */
  readonly phase: 'request' | 'response';
  constructor(phase: 'request' | 'response') {
    super(phase === 'request' ? 'the caller did not send its request in time' : 'nothing relayed within limits.idleTimeout');
    this.phase = phase;
  }
}

/**
 * The listener answered a call's connection itself because the rest of its
 * request did not parse (a chunk-size line beyond 4 KiB, a bad chunk):
 * that refusal is the call's outcome, logged and counted once, by the call.
 */
export class DownstreamRefusedError extends Error {
  override readonly name = 'DownstreamRefusedError';
  readonly code = 'MESHGATE_DOWNSTREAM_REFUSED';
  readonly reasonCode: ReasonCode<'data'>;
  constructor(reasonCode: ReasonCode<'data'>, reason: string) {
    super(reason);
    this.reasonCode = reasonCode;
  }
}

const REFUSED = Symbol('meshgate.downstreamRefused');

/**
 * nghttp2 errors (ERR_HTTP2_ERROR's errno) that mean the caller's frames broke the protocol:
 * PROTO (e.g. DATA beyond content-length), FRAME_SIZE_ERROR, HEADER_COMP, FLOW_CONTROL,
 * HTTP_HEADER, HTTP_MESSAGING, FLOODED. Not CALLBACK_FAILURE (-902): node's own, seen when a
 * caller drops a connection with many streams open.
 */
const CALLER_H2_ERRORS = new Set([-505, -522, -523, -524, -531, -532, -904]);

function isCallerProtocolError(err: unknown): boolean {
  const e = err as { code?: string; errno?: number } | null | undefined;
  return e?.code === 'ERR_HTTP2_ERROR' && e.errno !== undefined && CALLER_H2_ERRORS.has(e.errno);
}

/** Marks the socket (HTTP/1.1) or stream (HTTP/2) of an in-flight call the listener refused (see DownstreamRefusedError). */
export function markRefused(socket: object, refusal: DownstreamRefusedError): void {
  (socket as { [REFUSED]?: DownstreamRefusedError })[REFUSED] = refusal;
}

function refusalOf(carrier: object | null | undefined): DownstreamRefusedError | undefined {
  const marked = (carrier as { [REFUSED]?: DownstreamRefusedError } | null | undefined)?.[REFUSED];
  if (marked) return marked;
  // Node destroys an HTTP/2 session whose frames nghttp2 refused (DATA beyond its content-length, a flood),
  // and each of its streams with ERR_HTTP2_ERROR: the caller broke the protocol, it did not leave.
  if (isCallerProtocolError((carrier as { errored?: unknown } | null | undefined)?.errored)) {
    return new DownstreamRefusedError('request.malformed', 'the HTTP/2 connection broke the protocol');
  }
  return undefined;
}

/**
 * Whether the caller's side of a call is still open; when it is not, the
 * listener's timeout that closed it, or 'gone' when the caller left. Asked
 * when an attempt fails: a caller that hangs up mid-body surfaces first as a
 * body error on the upstream request, before its response's 'close' event.
 */
export function downstreamFate(res: DownstreamResponse): 'open' | 'gone' | DownstreamTimeoutError | DownstreamRefusedError {
  const stream = (res as Http2ServerResponse).stream as (NodeJS.ReadableStream & { destroyed: boolean; errored: Error | null }) | undefined;
  // The request's socket, not the response's: node:http's pipelined responses get theirs only when their turn comes.
  const carrier = stream ?? (res as H1Response).req?.socket;
  if (!carrier) return 'open';
  const refused = refusalOf(carrier);
  if (refused) return refused;
  if (carrier.errored instanceof DownstreamTimeoutError) return carrier.errored;
  return carrier.destroyed ? 'gone' : 'open';
}

/** Whether the listener's timer, not the caller, closed this request (read while its body is read). */
export function requestTimedOut(req: DownstreamRequest): boolean {
  const carrier = req.httpVersion === '2.0' ? (req as Http2ServerRequest).stream : req.socket;
  return (carrier as { errored?: unknown } | null)?.errored instanceof DownstreamTimeoutError;
}

/** The listener's refusal of this request's remaining bytes, if it made one (read while its body is read). */
export function requestRefused(req: DownstreamRequest): DownstreamRefusedError | undefined {
  return refusalOf(req.httpVersion === '2.0' ? (req as Http2ServerRequest).stream : req.socket);
}

/**
 * Ends a call whose head went out but whose body cannot be whole: HTTP/1.1
 * closes the connection (no last chunk, or fewer bytes than Content-Length);
 * HTTP/2 resets the stream with INTERNAL_ERROR. A bare destroy() of an
 * HTTP/2 response sends RST_STREAM NO_ERROR, which node's client reads as a
 * clean end: the caller would take a truncated body for a whole one.
 */
export function resetDownstream(res: DownstreamResponse): void {
  const stream = (res as Http2ServerResponse).stream as Http2ServerResponse['stream'] | undefined;
  if (stream === undefined) {
    res.destroy();
    return;
  }
  if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
}
