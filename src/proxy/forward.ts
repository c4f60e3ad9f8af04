import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { sleep } from '../core/backoff.ts';
import { downstreamResponseHeaders } from './headers.ts';
import type { DownstreamResponse } from './listener.ts';
import { createReplayableBody } from './replayable-body.ts';
import type { ReplayableBody } from './replayable-body.ts';
import { reasonCode } from '../errors/reason-codes.ts';
import { DownstreamRefusedError, DownstreamTimeoutError, downstreamFate } from './downstream.ts';
import { AttemptTimeoutError, DownstreamGoneError, classifyUpstreamError, reasonForFailure } from './upstream-errors.ts';
import type { AttemptFailure } from './upstream-errors.ts';

export type AttemptResult =
  /** `headers`: the response head, for the cluster to tell a peer's policy refusal from an endpoint failure (src/outbound/peer-answers.ts). */
  | { readonly kind: 'response'; readonly status: number; readonly headers: IncomingHttpHeaders }
  | { readonly kind: 'failure'; readonly failure: AttemptFailure };

/** One endpoint chosen for one attempt; `done` tells its cluster how it went. */
export interface UpstreamTarget {
  readonly dispatcher: Dispatcher;
  readonly label: string;
  done(result: AttemptResult): void;
}

export interface RetryPlan {
  /** Attempts after the first. */
  readonly attempts: number;
  readonly perTryTimeoutMs: number;
  readonly bufferLimit: number;
  shouldRetryResponse(status: number, headers: IncomingHttpHeaders): boolean;
  shouldRetryFailure(failure: AttemptFailure): boolean;
  backoffMs(retry: number): number;
  /** Retry budget: false when retrying now would exceed it. */
  acquire(): boolean;
  release(): void;
}

export interface ForwardRequest {
  readonly method: string;
  /** Path with query string. */
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  readonly body: Readable | null;
  /** Time until the response head, all attempts included. */
  readonly timeoutMs: number;
  /** Longest silence while the response body streams; 0 for none. */
  readonly bodyTimeoutMs: number;
  readonly retry: RetryPlan | undefined;
  pick(tried: ReadonlySet<string>): UpstreamTarget | undefined;
  mutateResponseHeaders?(headers: OutgoingHttpHeaders): void;
}

export interface ForwardOutcome {
  readonly status: number;
  /** Reason code when meshgate, not the upstream, produced the reply. */
  readonly reason: string | undefined;
  readonly upstream: string | undefined;
  readonly retries: number;
  readonly bytesOut: number;
}

export type ErrorReply = (code: string, reason: string) => void;

/** Responses dropped before a retry are drained up to this size to keep the connection. */
const DISCARD_LIMIT = 64 * 1024;

/**
 * Sends one call upstream with undici's dispatch API, streaming both bodies
 * with backpressure and relaying trailers (gRPC status lives there). Retries
 * happen only before any response byte reached the caller.
 */
export function forward(request: ForwardRequest, downstream: DownstreamResponse, replyError: ErrorReply): Promise<ForwardOutcome> {
  // Http2ServerResponse mirrors ServerResponse's API; TypeScript cannot unify their overloads.
  const res = downstream as ServerResponse;
  return new Promise<ForwardOutcome>((resolve) => {
    const tried = new Set<string>();
    const retry = request.retry;
    let replay: ReplayableBody | undefined;
    if (retry && retry.attempts > 0 && request.body) replay = createReplayableBody(request.body, retry.bufferLimit);
    let retries = 0;
    let settled = false;
    let headSent = false;
    let bytesOut = 0;
    let lastUpstream: string | undefined;
    let abortCurrent: ((err: Error) => void) | undefined;

    let routeTimedOut = false;
    const deadline = setTimeout(() => {
      routeTimedOut = true;
      abortCurrent?.(new AttemptTimeoutError('route timeout'));
    }, request.timeoutMs);

    const finish = (outcome: Omit<ForwardOutcome, 'retries' | 'bytesOut' | 'upstream'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      res.off('close', onDownstreamClose);
      resolve({ ...outcome, upstream: lastUpstream, retries, bytesOut });
    };
    const fail = (failure: AttemptFailure): void => {
      clearTimeout(deadline);
      const fate = downstreamFate(res);
      if (fate instanceof DownstreamRefusedError) {
        finish({ status: fate.status, reason: fate.reasonCode });
        return;
      }
      if (failure === 'aborted' || fate !== 'open') {
        // Nothing reaches the caller any more. 499 only if it left; if a listener timer closed it, that timeout.
        const code = fate instanceof DownstreamTimeoutError ? (fate.phase === 'request' ? 'request.timeout' : 'upstream.timeout') : 'request.cancelled';
        finish({ status: reasonCode(code).http, reason: code });
        return;
      }
      const code = reasonForFailure(failure);
      if (headSent) {
        // Mid-stream failure: reset the caller so it cannot mistake a truncated body for a whole one.
        // Logged with the reason's status (502, 504), not the 200 the caller saw before the reset.
        res.destroy();
        finish({ status: reasonCode(code).http, reason: code });
        return;
      }
      replyError(code, `upstream ${failure}`);
      finish({ status: res.statusCode, reason: code });
    };
    const onDownstreamClose = (): void => {
      // Not writableFinished: an Http2ServerResponse reports it once the caller reset the stream.
      if (!res.writableEnded) abortCurrent?.(new DownstreamGoneError('caller went away'));
    };
    res.once('close', onDownstreamClose);

    const canRetry = (): boolean =>
      retry !== undefined && retries < retry.attempts && !headSent && (request.body === null || (replay?.replayable() ?? false));

    /** Call only after `retry.acquire()` succeeded; the retried attempt releases it. */
    const scheduleRetry = (): void => {
      retries++;
      sleep(retry!.backoffMs(retries)).then(
        () => {
          if (settled) retry!.release();
          else if (downstreamFate(res) !== 'open') {
            // The caller's side closed during the backoff: no attempt is left to abort, and none is sent.
            retry!.release();
            fail('aborted');
          } else if (routeTimedOut) {
            // The route deadline passed during the backoff: no attempt is left to abort.
            retry!.release();
            fail('timeout');
          } else attempt(true);
        },
        () => retry!.release(),
      );
    };

    const attempt = (holdsBudget = false): void => {
      const target = request.pick(tried);
      if (!target) {
        if (holdsBudget) retry!.release();
        fail('connect-failure');
        return;
      }
      tried.add(target.label);
      lastUpstream = target.label;
      let mode: 'waiting' | 'stream' | 'discard' = 'waiting';
      let discarded = 0;
      let reported = false;
      let head: IncomingHttpHeaders = {};
      let controller: Dispatcher.DispatchController | undefined;
      let pendingAbort: Error | undefined;
      const report = (result: AttemptResult): void => {
        if (reported) return;
        reported = true;
        if (holdsBudget) retry!.release();
        target.done(result);
      };
      const perTry = retry && retry.perTryTimeoutMs < request.timeoutMs
        ? setTimeout(() => abortCurrent?.(new AttemptTimeoutError('per-try timeout')), retry.perTryTimeoutMs)
        : undefined;
      abortCurrent = (err) => {
        if (controller) controller.abort(err);
        else pendingAbort = err;
      };
      const body = request.body === null ? null : replay ? replay.reader() : request.body;

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(ctl) {
          controller = ctl;
          if (pendingAbort) ctl.abort(pendingAbort);
        },
        onResponseStart(ctl, statusCode, headers) {
          if (statusCode < 200) return;
          clearTimeout(perTry);
          const incoming = headers as IncomingHttpHeaders;
          head = incoming;
          if (canRetry() && retry!.shouldRetryResponse(statusCode, incoming) && retry!.acquire()) {
            report({ kind: 'response', status: statusCode, headers: incoming });
            mode = 'discard';
            return;
          }
          mode = 'stream';
          headSent = true;
          clearTimeout(deadline);
          const out = downstreamResponseHeaders(headers as Record<string, string | string[]>);
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
          if (mode === 'discard') {
            discarded += chunk.length;
            if (discarded > DISCARD_LIMIT) ctl.abort(new Error('discarded response too large'));
            return;
          }
          bytesOut += chunk.length;
          if (!res.write(chunk)) {
            ctl.pause();
            res.once('drain', () => ctl.resume());
          }
        },
        onResponseEnd(_ctl, trailers) {
          clearTimeout(perTry);
          if (mode === 'discard') {
            scheduleRetry();
            return;
          }
          report({ kind: 'response', status: res.statusCode, headers: head });
          const relayed = downstreamResponseHeaders(trailers as Record<string, string | string[]>);
          if (Object.keys(relayed).length > 0) res.addTrailers(relayed as Record<string, string>);
          res.end();
          finish({ status: res.statusCode, reason: undefined });
        },
        onResponseError(_ctl, err) {
          clearTimeout(perTry);
          // A caller that hangs up mid-body reaches undici as a body error (a reset) before its response closes:
          // ask the downstream first, so neither the log nor outlier detection blames the upstream for it.
          const fate = downstreamFate(res);
          const failure: AttemptFailure =
            fate === 'open' ? classifyUpstreamError(err) : fate instanceof DownstreamTimeoutError && fate.phase === 'response' ? 'timeout' : 'aborted';
          // No further attempt once the whole route timed out or the caller's side closed.
          const noRetry = (err instanceof AttemptTimeoutError && err.message === 'route timeout') || fate !== 'open';
          if (mode === 'discard') {
            // A response already chosen for retry failed while being drained: retry as planned,
            // unless the caller left or the whole route timed out.
            if (failure !== 'aborted' && !noRetry) {
              scheduleRetry();
              return;
            }
            retry!.release();
          }
          report({ kind: 'failure', failure });
          if (!noRetry && canRetry() && retry!.shouldRetryFailure(failure) && retry!.acquire()) {
            scheduleRetry();
            return;
          }
          fail(failure);
        },
      };
      try {
        target.dispatcher.dispatch(
          {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body,
            headersTimeout: 0,
            bodyTimeout: request.bodyTimeoutMs,
            idempotent: false,
          },
          handler,
        );
      } catch (err) {
        clearTimeout(perTry);
        report({ kind: 'failure', failure: 'other' });
        replyError('request.malformed', (err as Error).message);
        finish({ status: res.statusCode, reason: 'request.malformed' });
      }
    };
    attempt();
  });
}
