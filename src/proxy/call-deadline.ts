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
  return (opts, handler) => next(opts, untilHead(handler, opts.request.timeoutMs, 'route'));
}

/**
 * The retry plan's per-try timeout: until this attempt's response head. Only
 * set when shorter than the route's, which would otherwise fire first.
 */
export function perTryDeadline(next: Dispatch<AttemptOptions>): Dispatch<AttemptOptions> {
  return (opts, handler) => {
    const retry = opts.request.retry;
    if (!retry || retry.perTryTimeoutMs >= opts.request.timeoutMs) return next(opts, handler);
    next(opts, untilHead(handler, retry.perTryTimeoutMs, 'try'));
  };
}

/** Aborts with the scope's timeout unless a final response head (not an interim 1xx), the end or an error comes first. */
function untilHead(handler: CallHandler, ms: number, scope: 'route' | 'try'): CallHandler {
  let timer: NodeJS.Timeout | undefined;
  return {
    onRequestStart(ctl, context) {
      timer = setTimeout(() => ctl.abort(new AttemptTimeoutError(scope)), ms);
      handler.onRequestStart(ctl, context);
    },
    onResponseStart(ctl, statusCode, headers) {
      if (statusCode >= 200) clearTimeout(timer);
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
}
