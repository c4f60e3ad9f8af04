import { perTryDeadline, routeDeadline } from './call-deadline.ts';
import type { DownstreamResponse } from './downstream.ts';
import { downstreamFate } from './downstream.ts';
import { relayResponse } from './relay-response.ts';
import { retryAttempts } from './retry-attempts.ts';
import { upstreamAttempt } from './upstream-attempt.ts';
import type { CallOptions, CallProgress, Dispatch, ErrorReply, ForwardOutcome, ForwardRequest } from './upstream-call.ts';

/**
 * The stages of one upstream call, outermost first, composed as undici
 * composes interceptors: each wraps the handler of the stage above it, the
 * caller's relay (relay-response.ts) at the top.
 */
const sendCall: Dispatch<CallOptions> = routeDeadline(
  // call-deadline.ts: route timeout, all attempts included; 504 upstream.timeout
  retryAttempts(
    // retry-attempts.ts: pick, replay, budget, backoff, discard; retries only before the first response byte
    perTryDeadline(
      // call-deadline.ts: per-try timeout, may be retried
      upstreamAttempt, // upstream-attempt.ts: one attempt on the picked endpoint's undici dispatcher
    ),
  ),
);

/**
 * Sends one call upstream with undici's dispatch API, streaming both bodies
 * with backpressure and relaying trailers (gRPC status lives there). Retries
 * happen only before any response byte reached the caller.
 */
export function forward(request: ForwardRequest, downstream: DownstreamResponse, replyError: ErrorReply): Promise<ForwardOutcome> {
  return new Promise<ForwardOutcome>((settle) => {
    const progress: CallProgress = { upstream: undefined, retries: 0 };
    const relay = relayResponse(downstream, request, replyError, progress, settle);
    sendCall({ request, progress, fate: () => downstreamFate(downstream) }, relay);
  });
}
