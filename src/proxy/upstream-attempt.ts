import type { AttemptOptions, CallHandler } from './upstream-call.ts';
import { HandOverController } from './upstream-call.ts';
import { DispatchRefusedError } from './upstream-errors.ts';

/**
 * The last stage: one attempt, sent on the picked endpoint's undici
 * dispatcher, streaming the request body with backpressure. The stages above
 * get the attempt's controller at once, so a deadline or a caller that left
 * can abort it before undici has started the request.
 */
export function upstreamAttempt(opts: AttemptOptions, handler: CallHandler): void {
  const controller = new HandOverController();
  handler.onRequestStart(controller, undefined);
  const { request } = opts;
  try {
    opts.target.dispatcher.dispatch(
      {
        method: request.method,
        path: request.path,
        headers: request.headers,
        body: opts.body,
        headersTimeout: 0, // the route and per-try deadlines are meshgate's
        bodyTimeout: request.bodyTimeoutMs,
        idempotent: false, // retries are meshgate's too
      },
      {
        onRequestStart: (ctl) => controller.attach(ctl),
        onResponseStart: (_ctl, statusCode, headers) => handler.onResponseStart(controller, statusCode, headers),
        onResponseData: (_ctl, chunk) => handler.onResponseData(controller, chunk),
        onResponseEnd: (_ctl, trailers) => handler.onResponseEnd(controller, trailers),
        onResponseError: (_ctl, err) => handler.onResponseError(controller, err),
      },
    );
  } catch (err) {
    handler.onResponseError(controller, new DispatchRefusedError((err as Error).message));
  }
}
