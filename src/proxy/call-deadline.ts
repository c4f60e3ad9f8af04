import type { AttemptOptions, CallHandler, CallOptions, Dispatch } from './upstream-call.ts';
import { AttemptTimeoutError } from './upstream-errors.ts';

/*
 * The call's two deadlines, as stages. Both end in 504 upstream.timeout; the
 * error's scope tells the attempts stage whether another attempt may follow.
 */

/**
 * The route's timeout: until a response head goes on to the caller, all
 * attempts and backoffs included. When it passes, no further attempt is made.
 */
export function routeDeadline(next: Dispatch<CallOptions>): Dispatch<CallOptions> {
  return (opts, handler) => {
    let abort: ((err: Error) => void) | undefined;
    const timer = setTimeout(() => abort?.(new AttemptTimeoutError('route')), opts.request.timeoutMs);
    next(opts, {
      onRequestStart(ctl, context) {
        abort = (err) => ctl.abort(err);
        handler.onRequestStart(ctl, context);
      },
      onResponseStart(ctl, statusCode, headers) {
        clearTimeout(timer); // the attempts stage passes on only the final head it relays
        handler.onResponseStart(ctl, statusCode, headers);
      },
      onResponseData: (ctl, chunk) => handler.onResponseData(ctl, chunk),
      onResponseEnd(ctl, trailers) {
        clearTimeout(timer);
        handler.onResponseEnd(ctl, trailers);
      },
      onResponseError(ctl, err) {
        clearTimeout(timer);
        handler.onResponseError(ctl, err);
      },
    });
  };
}

/**
 * The retry plan's per-try timeout: until this attempt's response head. Only
 * set when shorter than the route's, which would otherwise fire first.
 */
export function perTryDeadline(next: Dispatch<AttemptOptions>): Dispatch<AttemptOptions> {
  return (opts, handler) => {
    const retry = opts.request.retry;
    if (!retry || retry.perTryTimeoutMs >= opts.request.timeoutMs) return next(opts, handler);
    let timer: NodeJS.Timeout | undefined;
    const perTry: CallHandler = {
      onRequestStart(ctl, context) {
        timer = setTimeout(() => ctl.abort(new AttemptTimeoutError('try')), retry.perTryTimeoutMs);
        handler.onRequestStart(ctl, context);
      },
      onResponseStart(ctl, statusCode, headers) {
        if (statusCode >= 200) clearTimeout(timer); // an interim 1xx is not the answer
        handler.onResponseStart(ctl, statusCode, headers);
      },
      onResponseData: (ctl, chunk) => handler.onResponseData(ctl, chunk),
      onResponseEnd(ctl, trailers) {
        clearTimeout(timer);
        handler.onResponseEnd(ctl, trailers);
      },
      onResponseError(ctl, err) {
        clearTimeout(timer);
        handler.onResponseError(ctl, err);
      },
    };
    next(opts, perTry);
  };
}
