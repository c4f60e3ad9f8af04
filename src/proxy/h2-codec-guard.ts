import http2 from 'node:http2';
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';

/** Why the HTTP/2 codec (nghttp2, or node around it) closed a connection: a bounded label set. */
export type H2ConnectionErrorReason = 'http2_flood' | 'http2_flow_control' | 'http2_protocol_error';

export interface CodecRefusalHooks {
  /** The codec found a connection error and is closing the connection with GOAWAY. Once per connection. */
  onConnectionError(reason: H2ConnectionErrorReason): void;
  /**
   * Streams the codec reset before any handler saw them: `malformed` (an
   * invalid or missing pseudo-header, a forbidden or uppercase field name, a
   * header list over the size limit) or `refused_stream` (past
   * SETTINGS_MAX_CONCURRENT_STREAMS), `count` of them.
   */
  onStreamsRefused(kind: 'malformed' | 'refused_stream', count: number): void;
}

/** nghttp2 error codes node hands to the session as `errno` (nghttp2.h). */
const NGHTTP2_ERR_FLOW_CONTROL = -524;
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
  return 'http2_protocol_error';
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
export function watchCodecRefusals(session: ServerHttp2Session, maxConcurrentStreams: number, hooks: CodecRefusalHooks): void {
  let seen = -1; // highest stream id the handler saw; client ids are odd
  let open = 0;
  let openAfterLast = 0; // streams open just after the last one arrived: the most the codec can have counted since
  const gap = (upTo: number): void => {
    const missing = Math.min(MAX_PER_GAP, (upTo - seen) / 2 - 1);
    if (missing >= 1) hooks.onStreamsRefused(openAfterLast >= maxConcurrentStreams ? 'refused_stream' : 'malformed', missing);
  };
  session.on('stream', (stream: ServerHttp2Stream) => {
    const id = stream.id ?? seen;
    gap(id);
    seen = Math.max(seen, id);
    open++;
    openAfterLast = open;
    stream.once('close', () => open--);
  });

  let reported = false;
  const destroy = session.destroy.bind(session);
  session.destroy = (error?: Error, code?: number): void => {
    if (!session.destroyed) {
      try {
        // Refused during its headers: nghttp2 processed it (its last stream id), the handler never saw it.
        const last = session.state.lastProcStreamID;
        if (last !== undefined && last > seen) gap(last + 2);
        seen = Math.max(seen, last ?? seen);
      } catch {
        // No state: nothing more to credit.
      }
      const reason = classify(error);
      if (reason !== undefined && !reported) {
        reported = true;
        hooks.onConnectionError(reason);
        if (reason === 'http2_flood' && code === undefined) code = http2.constants.NGHTTP2_ENHANCE_YOUR_CALM;
      }
    }
    destroy(error, code);
  };
}
