import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';

/** A call as either codec hands it over. */
export type DownstreamRequest = IncomingMessage | Http2ServerRequest;
export type DownstreamResponse = ServerResponse | Http2ServerResponse;

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
 * Whether the caller's side of a call is still open; when it is not, the
 * listener's timeout that closed it, or 'gone' when the caller left. Asked
 * when an attempt fails: a caller that hangs up mid-body surfaces first as a
 * body error on the upstream request, before its response's 'close' event.
 */
export function downstreamFate(res: DownstreamResponse): 'open' | 'gone' | DownstreamTimeoutError {
  const stream = (res as Http2ServerResponse).stream as (NodeJS.ReadableStream & { destroyed: boolean; errored: Error | null }) | undefined;
  // The request's socket, not the response's: a pipelined response gets its socket only when its turn comes.
  const carrier = stream ?? (res as ServerResponse).req?.socket;
  if (!carrier) return 'open';
  if (carrier.errored instanceof DownstreamTimeoutError) return carrier.errored;
  return carrier.destroyed ? 'gone' : 'open';
}

/** Whether the listener's timer, not the caller, closed this request (read while its body is read). */
export function requestTimedOut(req: DownstreamRequest): boolean {
  const carrier = req.httpVersion === '2.0' ? (req as Http2ServerRequest).stream : req.socket;
  return (carrier as { errored?: unknown } | null)?.errored instanceof DownstreamTimeoutError;
}
