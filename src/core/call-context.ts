import type { IncomingHttpHeaders } from 'node:http';
import type { ReasonCode } from './reason-codes.ts';

export type Direction = 'inbound' | 'outbound';

/**
 * Everything a filter may know about one call. Built once by the stack from the
 * codec's request; filters read it and may record decisions, never mutate the
 * request line itself (path normalization happens before the chain, once).
 */
export interface CallContext {
  readonly id: string;
  readonly direction: Direction;
  readonly startedAt: number;
  readonly method: string;
  /** Path without the query string, as forwarded. */
  readonly path: string;
  /** Raw query string without `?`, or ''. */
  readonly query: string;
  readonly authority: string;
  /** Lower-cased request headers as received (after hop-by-hop removal). */
  readonly headers: IncomingHttpHeaders;
  readonly httpVersion: '1.1' | '2';
  readonly isGrpc: boolean;
  readonly source: {
    readonly address: string;
    readonly port: number;
    /** SPIFFE ID of the peer when it presented a verified certificate. */
    readonly principal: string | undefined;
  };
  readonly destination: {
    readonly service: string;
    readonly namespace: string;
  };
  /** Mutable per-call annotations (decision, rule, retries, upstream). */
  readonly annotations: CallAnnotations;
  /**
   * The request body, for the few filters that must see it (validate). Set by
   * the inbound stack (no outbound filter reads bodies yet); absent on calls
   * built elsewhere (offline explain, tests, outbound), where a filter that
   * needs the body must fail closed rather than skip its check.
   */
  readonly body?: RequestBody;
}

/**
 * Access to a call's request body. Reading it is the exception: a call whose
 * filters never call `read` keeps streaming to the upstream untouched.
 */
export interface RequestBody {
  /** True when the request carries a body (Content-Length above 0, chunked, or an HTTP/2 stream not ended with its headers). */
  readonly present: boolean;
  /** The declared Content-Length (the codecs refuse a body that differs from it); undefined when chunked or unknown. */
  readonly declaredLength: number | undefined;
  /**
   * Buffers the body up to `limit` bytes, once: later calls get the first
   * call's result. Whatever was read is forwarded to the upstream first, then
   * the rest of the stream, so a call that continues loses no byte.
   */
  read(limit: number): Promise<BodyRead>;
  /**
   * What `read(limit)` gives, now, when it needs no waiting (the whole body
   * came with the request head, or a read settled before); undefined when
   * the body must be waited for (read() then waits for it). A filter that
   * gets an answer here can decide without going asynchronous.
   */
  readNow?(limit: number): BodyRead | undefined;
}

export type BodyRead =
  /** The whole body, at most `limit` bytes. */
  | { readonly kind: 'complete'; readonly bytes: Buffer }
  /** More than `limit` bytes arrived; reading stopped there (the rest is still unread). */
  | { readonly kind: 'too_large'; readonly received: number }
  /** The caller reset the stream or the connection before the body ended. */
  | {
      readonly kind: 'failed';
      readonly reason: string /** The listener's timer closed the request (limits.idleTimeout, requestTimeout), not the caller. */;
      readonly timedOut?: boolean /** The listener refused the rest of the request (its body did not parse) with this reason code. */;
      readonly refused?: ReasonCode<'data'>;
    }
  /** The sidecar-wide budget for buffered bodies (limits.maxBufferedBodies) is in use by other calls. */
  | { readonly kind: 'over_budget' };

interface CallAnnotations {
  decision?: 'allow' | 'deny';
  reason?: ReasonCode<'data'>;
  /** `namespace/policy#rule` that decided. */
  rule?: string;
  /** Id of the decision, quoted in deny bodies and logs so an operator can find the trail. */
  decisionId?: string;
  upstream?: string;
  retries: number;
  route?: string;
  /**
   * What rate limiting did to this call, for the access log and the span
   * (`meshgate.ratelimit`): e.g. `allowed`, `limited`, `shadow_limited`. Set by the rate-limit filter.
   */
  rateLimit?: string;
  /**
   * The Route version (`versions[].name`) of the endpoint that answered an
   * outbound call, for the access log and the span (`meshgate.version`). Set by
   * the outbound stack when that endpoint belongs to a declared version.
   */
  version?: string;
  /**
   * Set by a filter that holds something for the call (a concurrency slot):
   * recordCall (proxy/call-telemetry.ts) calls it once when the call is over, whatever ended it
   * (the response's end, a refusal, an answer from the cache, an upstream error, the
   * caller leaving, a timeout). Filters compose: call the one already set.
   */
  onCallEnd?: () => void;
  /**
   * Set by a filter while the call waits in one of its queues (throttle,
   * concurrency): the inbound stack calls it if the caller leaves meanwhile,
   * so the call leaves the queue at once.
   */
  onCallerGone?: () => void;
  /** Set by the inbound stack when the caller left while the filters ran: a filter must not queue such a call. */
  callerGone?: boolean;
  /** The verified request credential (JWT or OAuth2 introspection), set by the authn filter. */
  auth?: RequestAuth;
  /** Rules in shadow mode that would have denied this call (`namespace/policy#rule`). */
  shadowDenials?: string[];
  /**
   * Changes to the request the local app receives, recorded by filters (authn
   * strips a credential and sets the verified-claims header) and applied by the
   * inbound stack only when the chain lets the call through.
   */
  upstreamEdits?: UpstreamRequestEdits;
  /**
   * Lower-case headers a filter adds to the app's response when the chain lets
   * the call through (the rate-limit fields), after the app's own values of the
   * same name. Applied by the inbound stack.
   */
  responseHeaders?: Record<string, string>;
  /**
   * The Route `responses` rule matched by this call (cache, hardening), set by
   * the response filter only when one matches; its shape is
   * src/filters/response/response-plan.ts's. Applied by the inbound stack.
   */
  responsePlan?: ResponsePlanHandle;
  /** What the response cache did with the call, for the access log: `hit`, `miss`, or `bypass:<why>`. */
  cache?: string;
}

/** What core knows of a response plan: its rule id (`namespace/route#rule`); the rest is the response filter's. */
export interface ResponsePlanHandle {
  readonly rule: string;
}

export interface UpstreamRequestEdits {
  /** Lower-case header names dropped from the forwarded request; applied before `setHeaders`. */
  readonly removeHeaders: string[];
  /** Lower-case header names set on the forwarded request, replacing any value. */
  readonly setHeaders: Record<string, string>;
  /** The forwarded query string (without `?`, '' for none) when a filter rewrote it. */
  query?: string;
}

export interface RequestAuth {
  /** `issuer/subject`, what AuthorizationPolicy `requestPrincipals` match. */
  readonly principal: string;
  readonly issuer: string;
  readonly subject: string;
  readonly claims: Readonly<Record<string, unknown>>;
}
