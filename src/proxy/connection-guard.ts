import http from 'node:http';
import type { Socket } from 'node:net';
import type { ReasonCode } from '../core/reason-codes.ts';

/**
 * Connection-level defences of a data listener, before any request reaches a
 * handler: the deadline for the first request head, the per-source connection
 * cap, and the raw replies for requests node's parser refused.
 */

/** What a listener refused before a handler ran; the sidecar logs and counts it like a call. */
interface ListenerRejection {
  readonly status: number;
  /** Reason code (src/core/reason-codes.ts). */
  readonly code: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: '1.1' | '2';
}

/** Connection errors HTTP/2's codec found, as counted (./h2-codec-guard.ts classifies them). */
export type H2ConnectionErrorReason = 'http2_flood' | 'http2_flow_control' | 'http2_protocol_error';

export interface ListenerHooks {
  /** A request refused before a handler saw it: answered when a reply was possible, closed otherwise. Must not throw. */
  onRejected?(rejection: ListenerRejection): void;
  /** A connection refused on accept: the listener is full (maxConnections) or its source address is (maxConnectionsPerSource). */
  onConnectionRefused?(reason: 'max_connections' | 'max_connections_per_source', address: string): void;
  /** A connection closed because its caller abused the protocol (http2_rapid_reset) or the HTTP/2 codec found a connection error (./h2-codec-guard.ts). */
  onAbuse?(reason: 'http2_rapid_reset' | H2ConnectionErrorReason, address: string | undefined): void;
}

/**
 * One timer per connection until its first request head (or first HEADERS
 * frame) is in. The action changes as the connection moves on (sniffing, TLS
 * handshake, HTTP/1.1 or HTTP/2), the deadline does not; a TLS connection gets
 * a fresh one once its handshake is done.
 */
export interface HeadDeadline {
  /** What to do when the time is up, from now on. */
  onExpiry(action: () => void): void;
  clear(): void;
}

export function startHeadDeadline(ms: number, action: () => void): HeadDeadline {
  let current = action;
  let timer: NodeJS.Timeout | undefined = setTimeout(() => {
    timer = undefined;
    current();
  }, ms);
  return {
    onExpiry(next) {
      current = next;
    },
    clear() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

/** Open connections per source address, so one client cannot take a listener's whole maxConnections. */
export interface SourceCounter {
  /** False when `address` is at the cap; otherwise counts the connection until `release`. */
  admit(address: string): boolean;
  release(address: string): void;
}

export function createSourceCounter(max: number): SourceCounter {
  const open = new Map<string, number>();
  return {
    admit(address) {
      const count = open.get(address) ?? 0;
      if (count >= max) return false;
      open.set(address, count + 1);
      return true;
    },
    release(address) {
      const count = open.get(address) ?? 0;
      if (count <= 1) open.delete(address);
      else open.set(address, count - 1);
    },
  };
}

/** A TCP connection's addresses, which a TLS socket shares with the raw socket it wraps. */
export function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}

/**
 * Answers on a socket no ServerResponse owns (a parse error, a head that did
 * not arrive in time) in our format, and closes it: after such an error the
 * byte stream cannot be trusted. Returns false when no reply was possible.
 */
export function replyRaw(socket: Socket, status: number, code: string, reason: string, lingerMs: number): boolean {
  // A response of this connection may have started: a raw reply would corrupt it.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return false;
  }
  const body = JSON.stringify({ code, reason });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-meshgate-reason: ${code}\r\nconnection: close\r\n\r\n${body}`,
  );
  // Closed once the peer read the reply and hung up, or after `lingerMs` if it never does.
  const linger = setTimeout(() => socket.destroy(), lingerMs);
  socket.once('close', () => clearTimeout(linger));
  return true;
}

/** How node's HTTP/1.1 parser errors are answered: status, reason code, and a reason without parser internals. */
export function describeClientError(code: string | undefined): { status: number; code: ReasonCode<'data'>; reason: string } {
  if (code === 'HPE_HEADER_OVERFLOW') return { status: 431, code: 'request.headers_too_large', reason: 'request head larger than limits.maxHeaderSize' };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'HPE_HEADERS_TIMEOUT') {
    return { status: 408, code: 'request.timeout', reason: 'request not received within limits.headersTimeout or limits.requestTimeout' };
  }
  return { status: 400, code: 'request.malformed', reason: 'request is not valid HTTP/1.1' };
}

/** RFC 9112 §3: method SP request-target SP HTTP-version, separated by exactly one SP each. */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\x00-\x20\x7f]+ HTTP\/\d\.\d\r?$/;
const LF = 0x0a;

/**
 * Checks a connection's first request line, which node's parser would accept
 * with repeated or other whitespace between its parts (a lenient parse RFC
 * 9112 §3 allows and warns can be used to smuggle past a front proxy that
 * reads the line differently). `incomplete` until a line feed arrives or
 * `limit` bytes did (then node's parser answers 431).
 */
export function checkRequestLine(head: Buffer, limit: number): 'incomplete' | 'ok' | 'malformed' {
  let start = 0;
  // At least one empty line before the request line is ignored (RFC 9112 §2.2), as node's parser does.
  while (start < head.length && (head[start] === 0x0d || head[start] === LF)) start++;
  const end = head.indexOf(LF, start);
  if (end < 0) return head.length >= limit ? 'ok' : 'incomplete';
  return REQUEST_LINE.test(head.toString('latin1', start, end)) ? 'ok' : 'malformed';
}
