/** How an attempt failed, as far as retries and outlier detection care. */
export type AttemptFailure = 'connect-failure' | 'reset' | 'timeout' | 'overloaded' | 'aborted' | 'other';

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);
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

export class AttemptTimeoutError extends Error {
  override readonly name = 'AttemptTimeoutError';
  readonly code = 'MESHGATE_ATTEMPT_TIMEOUT';
}

export class DownstreamGoneError extends Error {
  override readonly name = 'DownstreamGoneError';
  readonly code = 'MESHGATE_DOWNSTREAM_GONE';
}

export function classifyUpstreamError(err: unknown): AttemptFailure {
  const code = (err as { code?: string } | null)?.code ?? '';
  if (err instanceof AttemptTimeoutError || code === 'UND_ERR_HEADERS_TIMEOUT') return 'timeout';
  if (err instanceof DownstreamGoneError || code === 'UND_ERR_ABORTED') return 'aborted';
  if (CONNECT_CODES.has(code)) return 'connect-failure';
  if (RESET_CODES.has(code)) return 'reset';
  if (code === 'UND_ERR_QUEUE_FULL') return 'overloaded';
  return 'other';
}

export function reasonForFailure(failure: AttemptFailure): string {
  switch (failure) {
    case 'timeout':
      return 'upstream.timeout';
    case 'connect-failure':
      return 'upstream.unavailable';
    case 'overloaded':
      return 'upstream.overloaded';
    default:
      return 'upstream.reset';
  }
}
