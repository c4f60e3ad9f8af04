import type { ReasonCode } from '../core/reason-codes.ts';
import type { downstreamFate } from './downstream.ts';
import { DownstreamTimeoutError } from './downstream.ts';

/** How an attempt failed, as far as retries and outlier detection care. */
export type AttemptFailure = 'connect-failure' | 'identity' | 'reset' | 'timeout' | 'overloaded' | 'aborted' | 'protocol-error' | 'other';

const CONNECT_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
const RESET_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
  'UND_ERR_INFO',
]);

/**
 * The upstream answered, but not in HTTP: a response head or body the
 * sidecar's HTTP/1.1 parser (src/proxy/h1-response-parser.ts) or undici's refuses (llhttp's HPE_* errors; undici 8 leaves `code` unset on some
 * of them, hence the name check too), headers beyond its limit, or a body
 * longer or shorter than its Content-Length.
 */
const PROTOCOL_CODES = new Set(['UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_HEADERS_OVERFLOW', 'MESHGATE_UPSTREAM_PROTOCOL']);

/** OpenSSL verification failures of the upstream's certificate: the request never left. */
const TLS_VERIFY_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_NOT_YET_VALID',
]);

/** A meshgate deadline ended the attempt: the route's (all attempts, no retry after it) or the per-try one (may be retried). */
export class AttemptTimeoutError extends Error {
  override readonly name = 'AttemptTimeoutError';
  readonly code = 'MESHGATE_ATTEMPT_TIMEOUT';
  readonly scope: 'route' | 'try';
  constructor(scope: 'route' | 'try') {
    super(scope === 'route' ? 'route timeout' : 'per-try timeout');
    this.scope = scope;
  }
}

/** The route's deadline passed: the call ends, whatever attempts are left. */
export function isRouteTimeout(err: unknown): boolean {
  return err instanceof AttemptTimeoutError && err.scope === 'route';
}

/** No endpoint left to try: answered upstream.unavailable, never retried. */
export class NoEndpointError extends Error {
  override readonly name = 'NoEndpointError';
  readonly code = 'MESHGATE_NO_ENDPOINT';
}

/** undici refused the request itself (it threw from dispatch, e.g. a header it will not send): the caller's request is malformed. */
export class DispatchRefusedError extends Error {
  override readonly name = 'DispatchRefusedError';
  readonly code = 'MESHGATE_DISPATCH_REFUSED';
}

export class DownstreamGoneError extends Error {
  override readonly name = 'DownstreamGoneError';
  readonly code = 'MESHGATE_DOWNSTREAM_GONE';
}

export function classifyUpstreamError(err: unknown): AttemptFailure {
  const code = (err as { code?: string } | null)?.code ?? '';
  // UND_ERR_BODY_TIMEOUT: the response body stalled past limits.idleTimeout, a meshgate timer (504, not a reset).
  if (err instanceof AttemptTimeoutError || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  if (err instanceof DownstreamGoneError || code === 'UND_ERR_ABORTED') return 'aborted';
  if (err instanceof NoEndpointError) return 'connect-failure';
  if (err instanceof DispatchRefusedError) return 'other';
  if (code === 'MESHGATE_PEER_IDENTITY') return 'identity';
  if (CONNECT_CODES.has(code) || code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || TLS_VERIFY_CODES.has(code)) return 'connect-failure';
  if (RESET_CODES.has(code)) return 'reset';
  if (code === 'UND_ERR_QUEUE_FULL') return 'overloaded';
  if (PROTOCOL_CODES.has(code) || code.startsWith('HPE_') || (err as { name?: string } | null)?.name === 'HTTPParserError') return 'protocol-error';
  return 'other';
}

export function reasonForFailure(failure: AttemptFailure): ReasonCode<'data'> {
  switch (failure) {
    case 'timeout':
      return 'upstream.timeout';
    case 'connect-failure':
      return 'upstream.unavailable';
    case 'identity':
      return 'upstream.identity_mismatch';
    case 'overloaded':
      return 'upstream.overloaded';
    case 'protocol-error':
      return 'upstream.protocol_error';
    default:
      return 'upstream.reset';
  }
}

/**
 * How an attempt failed, asking the caller's side first: a caller that hangs up mid-body reaches
 * undici as a body error (a reset) before its response closes, and neither the log nor outlier
 * detection may blame the upstream for it.
 */
export function failureOf(err: unknown, fate: ReturnType<typeof downstreamFate>): AttemptFailure {
  if (fate === 'open') return classifyUpstreamError(err);
  return fate instanceof DownstreamTimeoutError && fate.phase === 'response' ? 'timeout' : 'aborted';
}
