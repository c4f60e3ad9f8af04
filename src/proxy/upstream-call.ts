import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { downstreamFate } from './downstream.ts';
import type { AttemptFailure } from './upstream-errors.ts';

/*
 * What the stages of one upstream call share (src/proxy/forward.ts composes
 * them). A stage is an undici-style interceptor: it takes the next dispatch
 * and returns one that wraps the handler it is given, as undici's
 * Dispatcher.compose() does with its interceptors (lib/interceptor/retry.js).
 */

export type AttemptResult =
  /** `headers`: the response head, for the cluster to tell a peer's policy refusal from an endpoint failure (src/outbound/peer-answers.ts). */
  { readonly kind: 'response'; readonly status: number; readonly headers: IncomingHttpHeaders } | { readonly kind: 'failure'; readonly failure: AttemptFailure };

/** One endpoint chosen for one attempt; `done` tells its cluster how it went. */
export interface UpstreamTarget {
  /** Only `dispatch` is used: an undici dispatcher or the sidecar's own HTTP/1.1 pool (src/proxy/h1-pool.ts). */
  readonly dispatcher: Pick<Dispatcher, 'dispatch'>;
  readonly label: string;
  done(result: AttemptResult): void;
}

export interface RetryPlan {
  /** Attempts after the first. */
  readonly attempts: number;
  readonly perTryTimeoutMs: number;
  readonly bufferLimit: number;
  /**
   * Whether attempts replay the request body (kept up to bufferLimit). A plan that retries only
   * failures before any byte left (connect failures) does not: it retries while no attempt has read the body.
   */
  readonly replaysBody: boolean;
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
  /** Sees the response as it is relayed (response cache, size cap: src/filters/response/); absent for most calls, at no cost. */
  readonly responseTap?: ResponseTap | undefined;
}

/**
 * An observer of the relayed response. A reason code from `head` refuses the
 * response before any of it is relayed (the caller gets meshgate's reply
 * with that code instead); from `data`, it ends the relay (the caller is
 * reset, since part of the body went out). Either aborts the upstream call.
 */
export interface ResponseTap {
  /** The head as relayed (hop-by-hop fields removed), before mutateResponseHeaders. */
  head(status: number, headers: OutgoingHttpHeaders): ReasonCode<'data'> | undefined;
  data(chunk: Buffer): ReasonCode<'data'> | undefined;
  /** Once per call: the body ended whole (`trailers` if any were relayed), or the relay `failed` (refused, reset, caller gone). */
  end(how: 'whole' | 'trailers' | 'failed'): void;
}

export interface ForwardOutcome {
  readonly status: number;
  /** Reason code when meshgate, not the upstream, produced the reply. */
  readonly reason: ReasonCode<'data'> | undefined;
  readonly upstream: string | undefined;
  readonly retries: number;
  readonly bytesOut: number;
}

export type ErrorReply = (code: ReasonCode<'data'>, reason: string) => void;

/** What the attempts stage tells the relay for the outcome: the endpoint last tried and the retries made. */
export interface CallProgress {
  upstream: string | undefined;
  retries: number;
}

export interface CallOptions {
  readonly request: ForwardRequest;
  readonly progress: CallProgress;
  /** Whether the caller's side is still open (src/proxy/downstream.ts). */
  fate(): ReturnType<typeof downstreamFate>;
}

/** One attempt: the options of the call plus the endpoint picked and the body to send it. */
export interface AttemptOptions extends CallOptions {
  readonly target: UpstreamTarget;
  readonly body: Readable | null;
}

/** undici's handler, with the hooks every stage implements made required. */
export type CallHandler = Required<Pick<Dispatcher.DispatchHandler, 'onRequestStart' | 'onResponseStart' | 'onResponseData' | 'onResponseEnd' | 'onResponseError'>>;

export type Dispatch<O> = (opts: O, handler: CallHandler) => void;

/** What every dispatch controller reports: whether it was aborted (and why) and whether it is paused. */
export abstract class ControllerState {
  protected pausedNow = false;
  protected abortReason: Error | null = null;

  get aborted(): boolean {
    return this.abortReason !== null;
  }
  get paused(): boolean {
    return this.pausedNow;
  }
  get reason(): Error | null {
    return this.abortReason;
  }
}

/**
 * A controller handed out before the one it stands for exists: undici hands its own over only once
 * the request starts, and the attempts stage hands one to the stages above for all attempts (as
 * undici's RetryHandler does). An abort meanwhile is kept and applied when a controller is attached.
 */
export class HandOverController extends ControllerState implements Dispatcher.DispatchController {
  #target: Dispatcher.DispatchController | undefined;
  /** Stands for `target` from now on; undefined between attempts, when an abort is only kept. */
  attach(target: Dispatcher.DispatchController | undefined): void {
    this.#target = target;
    if (!target) return;
    if (this.abortReason) target.abort(this.abortReason);
    else if (this.pausedNow) target.pause();
  }
  abort(reason: Error): void {
    this.abortReason ??= reason;
    this.#target?.abort(reason);
  }
  pause(): void {
    this.pausedNow = true;
    this.#target?.pause();
  }
  resume(): void {
    this.pausedNow = false;
    this.#target?.resume();
  }
}
