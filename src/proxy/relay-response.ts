import type { ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { ReasonCode } from '../core/reason-codes.ts';
import { reasonCode } from '../core/reason-codes.ts';
import type { DownstreamResponse } from './downstream.ts';
import { DownstreamRefusedError, DownstreamTimeoutError, downstreamFate, resetDownstream } from './downstream.ts';
import { downstreamResponseHeaders } from './headers.ts';
import type { CallHandler, CallProgress, ErrorReply, ForwardOutcome, ForwardRequest } from './upstream-call.ts';
import type { AttemptFailure } from './upstream-errors.ts';
import { DispatchRefusedError, DownstreamGoneError, failureOf, reasonForFailure } from './upstream-errors.ts';

/**
 * The caller's end of an upstream call, the handler the stages of forward.ts
 * wrap: relays the response head (after the stack's header changes), the body
 * with backpressure, and the trailers (gRPC status lives there); turns a
 * failure into meshgate's reply, or a reset once the head went out; aborts the
 * call when the caller goes away. `settle` gets the outcome once.
 */
export function relayResponse(
  downstream: DownstreamResponse,
  request: Pick<ForwardRequest, 'mutateResponseHeaders' | 'responseTap'>,
  replyError: ErrorReply,
  progress: CallProgress,
  settle: (outcome: ForwardOutcome) => void,
): CallHandler {
  // H1Response and Http2ServerResponse mirror ServerResponse's API; TypeScript cannot unify their overloads.
  const res = downstream as unknown as ServerResponse;
  let controller: Dispatcher.DispatchController | undefined;
  let settled = false;
  let headSent = false;
  let bytesOut = 0;
  const tap = request.responseTap;

  const finish = (status: number, reason: ReasonCode<'data'> | undefined): void => {
    if (settled) return;
    settled = true;
    res.off('close', onDownstreamClose);
    if (reason !== undefined) tap?.end('failed'); // what the tap holds for this call goes
    settle({ status, reason, upstream: progress.upstream, retries: progress.retries, bytesOut });
  };
  const fail = (failure: AttemptFailure): void => {
    const fate = downstreamFate(downstream);
    if (fate instanceof DownstreamRefusedError) return finish(reasonCode(fate.reasonCode).http, fate.reasonCode);
    if (failure === 'aborted' || fate !== 'open') {
      // Nothing reaches the caller any more. 499 only if it left; if a listener timer closed it, that timeout.
      const code = fate instanceof DownstreamTimeoutError ? (fate.phase === 'request' ? 'request.timeout' : 'upstream.timeout') : 'request.cancelled';
      return finish(reasonCode(code).http, code);
    }
    const code = reasonForFailure(failure);
    if (headSent) {
      // Mid-stream failure: reset the caller so it cannot mistake a truncated body for a whole one.
      // Logged with the reason's status (502, 504), not the 200 the caller saw before the reset.
      resetDownstream(downstream);
      return finish(reasonCode(code).http, code);
    }
    replyError(code, `upstream ${failure}`);
    finish(res.statusCode, code);
  };
  let callerGone = false;
  const onDownstreamClose = (): void => {
    // Not writableFinished: an Http2ServerResponse reports it once the caller reset the stream.
    if (res.writableEnded) return;
    callerGone = true;
    controller?.abort(new DownstreamGoneError('caller went away'));
  };
  // A caller can leave before the call goes upstream (an HTTP/2 stream reset while the filters ran):
  // its 'close' has fired already, so the call starts aborted instead of waiting on an app for good.
  // on, not once: finish takes it off, and a second run would find the call ended (no once wrapper made per call).
  if (downstreamFate(downstream) === 'open') res.on('close', onDownstreamClose);
  else onDownstreamClose();

  /** The tap refused the response: meshgate's reply if nothing went out yet, else a reset; the upstream call aborted. */
  const refuse = (ctl: Dispatcher.DispatchController, code: ReasonCode<'data'>, midStream: boolean): void => {
    if (midStream) resetDownstream(downstream);
    else replyError(code, "the app's response exceeds what its route allows");
    finish(midStream ? reasonCode(code).http : res.statusCode, code);
    ctl.abort(new DownstreamGoneError(`response refused: ${code}`));
  };

  return {
    onRequestStart(ctl) {
      controller = ctl;
      if (callerGone) ctl.abort(new DownstreamGoneError('caller went away'));
    },
    onResponseStart(ctl, statusCode, headers) {
      const out = downstreamResponseHeaders(headers as Record<string, string | string[]>);
      if (tap !== undefined) {
        const refused = tap.head(statusCode, out);
        if (refused !== undefined) return refuse(ctl, refused, false);
      }
      headSent = true;
      request.mutateResponseHeaders?.(out);
      try {
        if (out['grpc-status'] === undefined) {
          res.writeHead(statusCode, out as Record<string, string | string[]>);
        } else {
          // A gRPC Trailers-Only reply (grpc-status in the head) must leave as one HEADERS frame
          // with END_STREAM, which res.end() sends; written now, the client would take it for
          // initial metadata and then see the stream end without a status.
          res.statusCode = statusCode;
          for (const [name, value] of Object.entries(out)) if (value !== undefined) res.setHeader(name, value);
        }
      } catch {
        ctl.abort(new DownstreamGoneError('invalid response head'));
      }
    },
    onResponseData(ctl, chunk) {
      if (tap !== undefined) {
        const cut = tap.data(chunk);
        if (cut !== undefined) return refuse(ctl, cut, true);
      }
      bytesOut += chunk.length;
      if (!res.write(chunk)) {
        ctl.pause();
        res.once('drain', () => ctl.resume());
      }
    },
    onResponseEnd(_ctl, trailers) {
      // Most responses have none: nothing is copied or counted for them.
      const relayed = hasField(trailers) ? downstreamResponseHeaders(trailers as Record<string, string | string[]>) : undefined;
      const hasTrailers = relayed !== undefined && hasField(relayed);
      if (hasTrailers) res.addTrailers(relayed as Record<string, string>);
      res.end();
      tap?.end(hasTrailers ? 'trailers' : 'whole');
      finish(res.statusCode, undefined);
    },
    onResponseError(_ctl, err) {
      if (settled) return; // the tap refused the response: already answered (refuse below)
      if (err instanceof DispatchRefusedError) {
        replyError('request.malformed', err.message);
        return finish(res.statusCode, 'request.malformed');
      }
      fail(failureOf(err, downstreamFate(downstream)));
    },
  };
}

function hasField(fields: object | null | undefined): boolean {
  for (const _ in fields) return true;
  return false;
}
