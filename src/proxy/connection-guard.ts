import type { Socket } from 'node:net';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { DownstreamRequest } from './downstream.ts';

/**
 * Connection-level defences of a data listener, before any request reaches a
 * handler: the deadline for the first request head, the per-source connection
 * cap, and what is known of a request refused before a handler ran.
 */

/**
 * A request refused before it became a call (by the codec, the listener, or a
 * target that cannot be read): logged and counted like a call, its status the
 * code's in the reason-code table.
 */
export interface Rejection {
  readonly code: ReasonCode<'data'>;
  readonly address: string;
  readonly port: number;
  readonly protocol: '1.1' | '2';
  readonly method?: string | undefined;
  readonly requestId?: string;
}

/** The rejection of a request whose head was read. */
export function requestRejection(req: DownstreamRequest, code: ReasonCode<'data'>, requestId: string): Rejection {
  return {
    code,
    address: req.socket?.remoteAddress ?? '',
    port: req.socket?.remotePort ?? 0,
    protocol: req.httpVersion === '2.0' ? '2' : '1.1',
    method: req.method,
    requestId,
  };
}

/** Connection errors HTTP/2's codec found, as counted (./h2-codec-guard.ts classifies them). */
export type H2ConnectionErrorReason = 'http2_flood' | 'http2_flow_control' | 'http2_protocol_error';

export interface ListenerHooks {
  /** A request refused before a handler saw it: answered when a reply was possible, closed otherwise. Must not throw. */
  onRejected?(rejection: Rejection): void;
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

/** A request head (or a connection's first bytes) that did not arrive within limits.headersTimeout, or a request within limits.requestTimeout. */
export const HEAD_TIMED_OUT = Object.freeze({ code: 'request.timeout', reason: 'request not received within limits.headersTimeout or limits.requestTimeout' } as const);
