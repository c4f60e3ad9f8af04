import type { IncomingHttpHeaders } from 'node:http';

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
}

export interface CallAnnotations {
  decision?: 'allow' | 'deny';
  reason?: string;
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
