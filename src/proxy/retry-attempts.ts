import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { sleep } from '../core/backoff.ts';
import { createReplayableBody } from './replayable-body.ts';
import type { AttemptOptions, AttemptResult, CallHandler, CallOptions, Dispatch } from './upstream-call.ts';
import { HandOverController } from './upstream-call.ts';
import { DispatchRefusedError, DownstreamGoneError, failureOf, isRouteTimeout, NoEndpointError } from './upstream-errors.ts';

/** Responses dropped before a retry are drained up to this size to keep the connection. */
const DISCARD_LIMIT = 64 * 1024;

/** What the first attempt has tried: nothing. A call's own set is made only if it retries (most never do). */
const NONE_TRIED: ReadonlySet<string> = new Set();

/**
 * No attempt has begun to read the body (a plan without replay retries only then): no consumer
 * attached (`readableFlowing` is null until one pipes or listens), nothing read, not destroyed, and,
 * for an H1Request, no read asked for and no whole body taken (./h1-server-request.ts).
 */
function bodyUntouched(body: Readable): boolean {
  return body.readableFlowing === null && !body.readableDidRead && !body.destroyed && (body as { readonly readStarted?: boolean }).readStarted !== true;
}

/**
 * The attempts of one call, like undici's retry interceptor: picks an endpoint
 * for each (another one when there is), replays the request body, tells the
 * endpoint's cluster how its attempt went, and retries as the route's plan
 * allows (within the cluster's retry budget, after a jittered backoff), only
 * before any response byte went on to the caller. A response chosen for retry
 * is drained and dropped. The stages above see one controller and one
 * response, whatever the number of attempts.
 */
export function retryAttempts(next: Dispatch<AttemptOptions>): Dispatch<CallOptions> {
  return (opts, caller) => {
    const { request, progress } = opts;
    const retry = request.retry;
    const replay = retry && retry.attempts > 0 && retry.replaysBody && request.body ? createReplayableBody(request.body, retry.bufferLimit) : undefined;
    // The endpoints tried so far: the first one's label alone until a retry needs the set (attempts are sequential).
    let firstTried: string | undefined;
    let tried: Set<string> | undefined;
    const controller = new HandOverController();
    let committed = false; // a response head went on to the caller: no attempt after this one
    caller.onRequestStart(controller, undefined);

    const canRetry = (): boolean => retry !== undefined && progress.retries < retry.attempts && !committed && (request.body === null || (replay ? replay.replayable() : bodyUntouched(request.body)));

    /** Call only after `retry.acquire()` succeeded; the retried attempt releases it. */
    const scheduleRetry = (): void => {
      controller.attach(undefined); // an abort during the backoff is kept, and ends the call when it is over
      progress.retries++;
      sleep(retry!.backoffMs(progress.retries)).then(
        () => {
          // The caller's side closed, or the route deadline passed, during the backoff: no attempt is sent.
          const ended = opts.fate() !== 'open' ? new DownstreamGoneError('caller went away') : controller.reason;
          if (!ended) return attempt(true);
          retry!.release();
          caller.onResponseError(controller, ended);
        },
        () => retry!.release(),
      );
    };

    const attempt = (holdsBudget: boolean): void => {
      if (tried === undefined && firstTried !== undefined) tried = new Set([firstTried]);
      const target = request.pick(tried ?? NONE_TRIED);
      if (!target) {
        if (holdsBudget) retry!.release();
        caller.onResponseError(controller, new NoEndpointError('no endpoint left to try'));
        return;
      }
      if (tried !== undefined) tried.add(target.label);
      else firstTried = target.label;
      progress.upstream = target.label;
      let mode: 'waiting' | 'relay' | 'discard' = 'waiting';
      let discarded = 0;
      let reported = false;
      let status = 0;
      let head: IncomingHttpHeaders = {};
      const report = (result: AttemptResult): void => {
        if (reported) return;
        reported = true;
        if (holdsBudget) retry!.release();
        target.done(result);
      };
      const handler: CallHandler = {
        onRequestStart(ctl) {
          controller.attach(ctl);
        },
        onResponseStart(_ctl, statusCode, headers) {
          if (statusCode < 200) return; // interim responses are not relayed
          status = statusCode;
          head = headers;
          if (canRetry() && retry!.shouldRetryResponse(statusCode, headers) && retry!.acquire()) {
            report({ kind: 'response', status: statusCode, headers });
            mode = 'discard';
            return;
          }
          mode = 'relay';
          committed = true;
          caller.onResponseStart(controller, statusCode, headers);
        },
        onResponseData(ctl, chunk) {
          if (mode === 'discard') {
            discarded += chunk.length;
            if (discarded > DISCARD_LIMIT) ctl.abort(new Error('discarded response too large')); // this attempt's, not the call's
            return;
          }
          caller.onResponseData(controller, chunk);
        },
        onResponseEnd(_ctl, trailers) {
          if (mode === 'discard') return scheduleRetry();
          report({ kind: 'response', status, headers: head });
          caller.onResponseEnd(controller, trailers);
        },
        onResponseError(_ctl, err) {
          if (err instanceof DispatchRefusedError) {
            report({ kind: 'failure', failure: 'other' });
            caller.onResponseError(controller, err);
            return;
          }
          const fate = opts.fate();
          const failure = failureOf(err, fate);
          // No further attempt once the whole route timed out or the caller's side closed.
          const noRetry = isRouteTimeout(err) || fate !== 'open';
          if (mode === 'discard') {
            // A response already chosen for retry failed while being drained: retry as planned,
            // unless the caller left or the whole route timed out.
            if (failure !== 'aborted' && !noRetry) return scheduleRetry();
            retry!.release();
          }
          report({ kind: 'failure', failure });
          if (!noRetry && canRetry() && retry!.shouldRetryFailure(failure) && retry!.acquire()) return scheduleRetry();
          caller.onResponseError(controller, err);
        },
      };
      next({ ...opts, target, body: request.body === null ? null : replay ? replay.reader() : request.body }, handler);
    };
    attempt(false);
  };
}
