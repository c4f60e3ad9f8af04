import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { H2ConnectionErrorReason, ListenerHooks } from './connection-guard.ts';
import { NGHTTP2_ENHANCE_YOUR_CALM } from './h2-error-codes.ts';
import type { ResetFloodGuard } from './h2-reset-guard.ts';
/** Why the HTTP/2 codec (nghttp2, or node around it) closed a connection: a bounded label set. */

/**
 * Node's HTTP/2 server bounds, set explicitly rather than left to node's
 * defaults (1 000 invalid frames, 100 rejected streams): a caller gets a few
 * mistakes, not a thousand refusals to log, before its connection is closed.
 */
export const H2_CODEC_BOUNDS = {
  /** Frames the codec found invalid (each malformed request is one). */
  maxSessionInvalidFrames: 100,
  /** Streams refused past SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxSessionRejectedStreams: 100,
  /** Entries in one SETTINGS frame (RFC 9113 defines 6). */
  maxSettings: 32,
} as const;

/**
 * What the listener learns of the codec's refusals: a connection error
 * (onAbuse, once per connection, with the GOAWAY sent), and each stream the
 * codec reset before any handler saw it (onRejected, logged as the reply it
 * would have had): an invalid or missing pseudo-header, a forbidden or
 * uppercase field name, a header list over the size limit (400
 * request.malformed), or a stream past SETTINGS_MAX_CONCURRENT_STREAMS (503
 * request.refused_stream).
 */
type CodecRefusalHooks = Pick<ListenerHooks, 'onAbuse' | 'onRejected'>;

/** nghttp2 error codes node hands to the session as `errno` (nghttp2.h). */
const NGHTTP2_ERR_PROTO = -505;
const NGHTTP2_ERR_FRAME_SIZE_ERROR = -522;
const NGHTTP2_ERR_HEADER_COMP = -523;
const NGHTTP2_ERR_FLOW_CONTROL = -524;
const NGHTTP2_ERR_BAD_CLIENT_MAGIC = -903;
const NGHTTP2_ERR_FLOODED = -904;
const NGHTTP2_ERR_TOO_MANY_CONTINUATIONS = -905;

/** Refused streams credited to one gap in stream ids, so a caller that skips ids (RFC 9113 §5.1.1 allows it) cannot make many lines of one stream. */
const MAX_PER_GAP = 10;

function classify(error: unknown): H2ConnectionErrorReason | undefined {
  if (!(error instanceof Error)) return undefined;
  const { code, errno } = error as NodeJS.ErrnoException;
  if (code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return 'http2_flood';
  // Socket errors (ECONNRESET), a GOAWAY the peer sent (ERR_HTTP2_SESSION_ERROR) and our own errors are no abuse.
  if (code !== 'ERR_HTTP2_ERROR') return undefined;
  if (errno === NGHTTP2_ERR_FLOODED || errno === NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) return 'http2_flood';
  if (errno === NGHTTP2_ERR_FLOW_CONTROL) return 'http2_flow_control';
  if (errno === NGHTTP2_ERR_PROTO || errno === NGHTTP2_ERR_FRAME_SIZE_ERROR || errno === NGHTTP2_ERR_HEADER_COMP || errno === NGHTTP2_ERR_BAD_CLIENT_MAGIC) return 'http2_protocol_error';
  // Anything else (NGHTTP2_ERR_CALLBACK_FAILURE when a connection is torn down mid-read, say) is no proof of abuse.
  return undefined;
}

/**
 * Makes the refusals node's HTTP/2 codec makes on its own visible, so each is
 * logged and counted like any other refusal. Node tells JavaScript nothing of
 * a stream nghttp2 reset during its HEADERS (RST_STREAM PROTOCOL_ERROR,
 * REFUSED_STREAM, ENHANCE_YOUR_CALM) and reports a connection error only by
 * destroying the session, after its GOAWAY INTERNAL_ERROR went out.
 *
 * - Connection errors: the session's own destroy(error) is wrapped to classify
 *   the error once and, for floods (PING, SETTINGS, CONTINUATION, invalid
 *   frames), send GOAWAY ENHANCE_YOUR_CALM as nginx and Envoy do.
 * - Refused streams: clients number streams 1, 3, 5, ..., so a stream id the
 *   handler never saw was reset by the codec. Gaps show when the next stream
 *   arrives, or when the connection ends (nghttp2's last processed stream id,
 *   read before the session goes, names one refused during its headers).
 *   Streams skipped while the handler had SETTINGS_MAX_CONCURRENT_STREAMS open
 *   were refused for concurrency; any other were malformed.
 */
export function watchCodecRefusals(session: ServerHttp2Session, maxConcurrentStreams: number, hooks: CodecRefusalHooks, resets: ResetFloodGuard): void {
  const address = session.socket?.remoteAddress ?? '';
  const port = session.socket?.remotePort ?? 0;
  let seen = -1; // highest stream id the handler saw; client ids are odd
  let open = 0;
  let openAfterLast = 0; // streams open just after the last one arrived: the most the codec can have counted since
  const gap = (upTo: number): void => {
    const missing = Math.min(MAX_PER_GAP, (upTo - seen) / 2 - 1);
    if (missing <= 0) return; // the usual case: the next stream id, nothing skipped
    const code = openAfterLast >= maxConcurrentStreams ? 'request.refused_stream' : 'request.malformed';
    for (let i = 0; i < missing; i++) hooks.onRejected?.({ code, address, port, protocol: '2' });
  };
  session.on('stream', (stream: ServerHttp2Stream) => {
    const id = stream.id ?? seen;
    gap(id);
    seen = Math.max(seen, id);
    open++;
    openAfterLast = open;
    // One close listener per stream for both guards (the rapid-reset count rides on it).
    const openedAt = resets.opened();
    stream.once('close', () => {
      open--;
      resets.closed(stream, openedAt);
    });
  });

  /** A stream refused during its headers: nghttp2 processed it (its last stream id), the handler never saw it. */
  const creditLast = (): void => {
    if (session.destroyed) return;
    try {
      const last = session.state.lastProcStreamID;
      if (last !== undefined && last > seen) gap(last + 2);
      seen = Math.max(seen, last ?? seen);
    } catch {
      // No state: nothing more to credit.
    }
  };
  // Before node's own 'close' listener tears the session down with its state.
  session.socket?.prependListener('close', creditLast);

  let reported = false;
  const destroy = session.destroy.bind(session);
  session.destroy = (error?: Error, code?: number): void => {
    if (!session.destroyed) {
      creditLast();
      const reason = classify(error);
      if (reason !== undefined && !reported) {
        reported = true;
        hooks.onAbuse?.(reason, address);
        if (reason === 'http2_flood' && code === undefined) code = NGHTTP2_ENHANCE_YOUR_CALM;
      }
    }
    destroy(error, code);
  };
}
