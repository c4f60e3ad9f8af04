import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } from './h2-error-codes.ts';

/** A stream the caller resets sooner than this after opening it counts as a premature reset. */
const PREMATURE_MS = 1_000;

/**
 * HTTP/2 rapid reset (CVE-2023-44487): a caller opens streams and resets them
 * at once, so each costs the sidecar a request's work and an upstream call
 * while the concurrency limit never binds. nghttp2's own guard (a burst of
 * 1 000 resets, then GOAWAY INTERNAL_ERROR) comes late and blames us.
 *
 * As Envoy does (overload.premature_reset_*), a connection is judged on the
 * streams it opened: once it has opened `minStreams`, if at least half of them
 * were reset by the caller within a second of opening, it gets GOAWAY
 * ENHANCE_YOUR_CALM and is closed. A client that cancels now and then (gRPC
 * deadlines, a user leaving a page) stays far under half and is never cut.
 *
 * A stream that closes `aborted` (before our response ended) with an error
 * code was reset by the caller, or by us on a failure mid-response, which is
 * rare and rarely within its first second.
 */
/** Counts a session's streams as they open and close; the codec guard's one stream listener drives it. */
export interface ResetFloodGuard {
  /** A stream opened; returns when, for closed(). */
  opened(): number;
  closed(stream: ServerHttp2Stream, openedAt: number): void;
}

export function createResetFloodGuard(session: ServerHttp2Session, minStreams: number, onFlood: () => void): ResetFloodGuard {
  let opened = 0;
  let premature = 0;
  let cut = false;
  return {
    opened() {
      opened++;
      return performance.now();
    },
    closed(stream, openedAt) {
      // Streams ended by the connection going away are no resets: Node closes them with NO_ERROR
      // when the socket ends, sometimes before the session knows, so only an error code counts.
      // A caller resetting with NO_ERROR is left to nghttp2's own limit. A destroyed session takes no GOAWAY.
      if (cut || !stream.aborted || stream.rstCode === NGHTTP2_NO_ERROR || session.destroyed || session.closed) return;
      if (performance.now() - openedAt >= PREMATURE_MS) return;
      premature++;
      if (opened >= minStreams && premature * 2 >= opened) {
        cut = true;
        onFlood();
        // The GOAWAY is queued before destroy() flushes and closes; destroy(code) alone would
        // also emit the code as a session error.
        session.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
        session.destroy();
      }
    },
  };
}
