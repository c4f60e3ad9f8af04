import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { Socket } from 'node:net';
import type tls from 'node:tls';
import type { LimitsConfig } from '../config/sidecar-schema.ts';
import { respond } from '../core/verdict.ts';
import { sendVerdict } from '../errors/reply.ts';
import { listenOn } from '../core/listen.ts';
import { guardAgainstResetFloods } from './h2-reset-guard.ts';

export type DownstreamRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type DownstreamResponse = http.ServerResponse | http2.Http2ServerResponse;
export type RequestHandler = (req: DownstreamRequest, res: DownstreamResponse) => void;

/** :method, :path, :scheme, :authority (and :protocol) count toward HTTP/2's pair limit. */
const PSEUDO_HEADERS = 5;

function fieldCount(req: DownstreamRequest): number {
  let count = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.charCodeAt(0) !== 58) count++;
  return count;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export interface HttpListener {
  readonly name: string;
  listen(port: number, host: string): Promise<net.AddressInfo>;
  /** Stop accepting; idle keep-alive connections close, in-flight calls go on. */
  stopAccepting(): Promise<void>;
  /** Close everything that is left, now. */
  destroy(): void;
  /** Requests currently being served. */
  inFlight(): number;
  /** Resolves once no request is being served. */
  whenIdle(): Promise<void>;
  /** SPIFFE ID of the verified peer that sent `req`, when it came over mutual TLS. */
  peerPrincipal(req: DownstreamRequest): string | undefined;
}

/** Mutual TLS on a listener. The tls.Server is owned by the caller, who swaps its context on rotation. */
export interface ListenerTls {
  /** STRICT: TLS only. PERMISSIVE: plaintext accepted too, for migrations. */
  readonly mode: 'STRICT' | 'PERMISSIVE';
  /** Must request and verify client certificates and offer ALPN h2 and http/1.1. */
  readonly server: tls.Server;
  /** Checks a chain-verified peer (trust domain, one SPIFFE ID) and returns its principal or why it is refused. */
  verifyPeer(socket: tls.TLSSocket): { principal: string | undefined } | { refused: string };
  /** Counts a refused connection: a failed handshake, a refused peer, or plaintext on a STRICT port. */
  onRefused(reason: string, detail: string): void;
}

/** What a listener reports about callers it cut off. */
export interface ListenerEvents {
  /** A connection closed because its caller abused the protocol (reason: e.g. http2_rapid_reset). */
  onAbuse(reason: string, remoteAddress: string | undefined): void;
}

/**
 * Takes an accepted connection over before the listener reads it (transparent
 * interception, src/interception/): it calls `serve` for a connection the HTTP
 * servers should have, and owns every other one.
 */
export type ConnectionDivert = (socket: Socket, serve: (socket: Socket) => void) => void;

/** TLS records start with a handshake content type byte (RFC 8446 §5.1). */
const TLS_HANDSHAKE = 0x16;

/**
 * A cleartext listener that serves HTTP/1.1 and HTTP/2 with prior knowledge
 * (h2c) on one port. Node has no server that does both without TLS, so we peek
 * at the first bytes for the HTTP/2 connection preface (RFC 9113 §3.4) and hand
 * the socket to the matching server. Every hardening limit is set explicitly.
 */
export function createHttpListener(
  name: string,
  limits: LimitsConfig,
  handler: RequestHandler,
  tlsOptions?: ListenerTls,
  events?: ListenerEvents,
  divert?: ConnectionDivert,
): HttpListener {
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  const counted: RequestHandler = (req, res) => {
    // Node drops header fields past maxHeadersCount silently; a request that hit the cap is refused instead.
    if (fieldCount(req) > limits.maxHeadersCount) {
      const verdict = respond('request.headers_too_large', `more than ${limits.maxHeadersCount} header fields`);
      sendVerdict(res, verdict, { grpc: false, requestId: 'none' });
      return;
    }
    inFlight++;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      inFlight--;
      if (inFlight === 0 && idleWaiters.length > 0) {
        for (const wake of idleWaiters) wake();
        idleWaiters = [];
      }
    };
    res.once('close', finish);
    res.once('finish', finish);
    handler(req, res);
  };

  const h1 = http.createServer(
    {
      maxHeaderSize: limits.maxHeaderSize,
      headersTimeout: limits.headersTimeout,
      requestTimeout: limits.requestTimeout,
      keepAliveTimeout: limits.idleTimeout,
      insecureHTTPParser: false,
      requireHostHeader: true,
      joinDuplicateHeaders: true,
    },
    counted,
  );
  h1.maxHeadersCount = limits.maxHeadersCount + 1;
  h1.on('clientError', replyToClientError);
  h1.timeout = limits.idleTimeout;

  const h2 = http2.createServer(
    {
      maxSessionMemory: limits.http2MaxSessionMemory,
      maxHeaderListPairs: limits.maxHeadersCount + 1 + PSEUDO_HEADERS,
      settings: {
        maxConcurrentStreams: limits.http2MaxConcurrentStreams,
        maxHeaderListSize: limits.maxHeaderSize,
        enablePush: false,
      },
      // Flood defences for PING, SETTINGS and invalid frames are Node's defaults; rapid reset is
      // ours (h2-reset-guard.ts), with nghttp2's own reset limit left behind it as a backstop.
    },
    counted,
  );
  h2.setTimeout(limits.idleTimeout);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    guardAgainstResetFloods(session, limits.http2RapidResetMinStreams, () => events?.onAbuse('http2_rapid_reset', session.socket?.remoteAddress));
  });

  // Peers are verified once per connection; requests find their principal by socket (HTTP/1.1) or session (HTTP/2).
  const socketPrincipals = new WeakMap<object, string>();
  const sessionPrincipals = new WeakMap<object, string>();
  let handshakePrincipal: string | undefined;
  h2.on('session', (session) => {
    // 'session' fires synchronously inside h2.emit('connection'), while handshakePrincipal is set.
    if (handshakePrincipal !== undefined) sessionPrincipals.set(session, handshakePrincipal);
  });
  if (tlsOptions) {
    tlsOptions.server.on('secureConnection', (tlsSocket: tls.TLSSocket) => {
      const verdict = tlsOptions.verifyPeer(tlsSocket);
      if ('refused' in verdict) {
        tlsOptions.onRefused(verdict.refused, 'peer refused after handshake');
        tlsSocket.destroy();
        return;
      }
      if (verdict.principal !== undefined) socketPrincipals.set(tlsSocket, verdict.principal);
      if (tlsSocket.alpnProtocol === 'h2') {
        handshakePrincipal = verdict.principal;
        h2.emit('connection', tlsSocket);
        handshakePrincipal = undefined;
      } else {
        h1.emit('connection', tlsSocket);
      }
    });
    tlsOptions.server.on('tlsClientError', (err: NodeJS.ErrnoException, tlsSocket: tls.TLSSocket) => {
      // With TLS 1.3 a refused client certificate often surfaces as a hang-up; the socket keeps the real reason.
      const verifyError = tlsSocket.authorizationError ? String(tlsSocket.authorizationError) : undefined;
      tlsOptions.onRefused(classifyHandshakeError(verifyError ?? `${err.code ?? ''} ${err.message}`), verifyError ?? err.code ?? err.message);
      tlsSocket.destroy();
    });
  }
  const route = (firstByte: number): 'tls' | 'plain' | 'refuse' => {
    if (!tlsOptions) return 'plain';
    if (firstByte === TLS_HANDSHAKE) return 'tls';
    return tlsOptions.mode === 'PERMISSIVE' ? 'plain' : 'refuse';
  };

  const sockets = new Set<Socket>();
  const serve = (socket: Socket): void => {
    sniff(socket, limits.headersTimeout, (seen) => {
      const where = route(seen[0]!);
      if (where === 'refuse') {
        tlsOptions!.onRefused('plaintext', 'plaintext on a STRICT mTLS port');
        socket.destroy();
        return false;
      }
      if (where === 'tls') {
        tlsOptions!.server.emit('connection', socket);
        return true;
      }
      return plaintext(socket, seen, h1, h2);
    });
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (divert) divert(socket, serve);
    else serve(socket);
  });
  server.maxConnections = limits.maxConnections;

  return {
    name,
    listen: (port, host) => listenOn(server, port, host),
    stopAccepting() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      h1.closeIdleConnections();
      // HTTP/1.1 connections close after their current response (Connection: close).
      h1.on('request', (_req, res) => res.setHeader('connection', 'close'));
      for (const session of sessions) session.close();
      return closed;
    },
    destroy() {
      h1.closeAllConnections();
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
    inFlight: () => inFlight,
    peerPrincipal(req) {
      if (req.httpVersion === '2.0') return sessionPrincipals.get((req as http2.Http2ServerRequest).stream.session as object);
      return socketPrincipals.get(req.socket);
    },
    whenIdle: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve))),
  };
}

/**
 * Node's parser rejects a malformed HTTP/1.1 request before any handler runs;
 * answer it in our format (JSON + reason code) and close, since the byte
 * stream cannot be trusted after a parse error.
 */
function replyToClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const [status, code] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'request.headers_too_large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT'
        ? [408, 'request.timeout']
        : [400, 'request.malformed'];
  const body = JSON.stringify({ code, reason: err.code ?? 'unparseable request' });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-meshgate-reason: ${code}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Reads until the first bytes tell which server a connection is for, puts them
 * back, and calls `dispatch` (which returns false when it refused the socket).
 */
function sniff(socket: Socket, timeoutMs: number, dispatch: (seen: Buffer) => boolean): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, H2_PREFACE.length);
    // A partial HTTP/2 preface needs more bytes; anything else is decided by its first byte.
    if (seen[0] !== TLS_HANDSHAKE && seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n)) && seen.length < H2_PREFACE.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onError);
    socket.pause();
    socket.unshift(seen);
    dispatch(seen);
  };
  const onError = (): void => {
    clearTimeout(timer);
    socket.destroy();
  };
  socket.on('data', onData);
  socket.on('error', onError);
  socket.once('close', () => clearTimeout(timer));
}

/** Hands a cleartext socket to the HTTP/2 (prior knowledge) or HTTP/1.1 server. */
function plaintext(socket: Socket, seen: Buffer, h1: http.Server, h2: http2.Http2Server): boolean {
  if (seen.length >= H2_PREFACE.length && seen.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) {
    // The HTTP/2 session drains bytes already buffered on the socket itself.
    h2.emit('connection', socket);
  } else {
    h1.emit('connection', socket);
    socket.resume();
  }
  return true;
}

/** Bounded reasons for the handshake error counter (never raw OpenSSL strings as labels). */
function classifyHandshakeError(reason: string): string {
  const text = reason.toUpperCase();
  if (text.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || text.includes('NO CERTIFICATE')) return 'no_client_certificate';
  if (text.includes('EXPIRED')) return 'certificate_expired';
  if (text.includes('NOT_YET_VALID')) return 'certificate_not_yet_valid';
  if (/UNKNOWN_CA|VERIFY_FAILED|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|SIGNATURE_FAILURE|INVALID_CA/.test(text)) return 'untrusted_certificate';
  if (text.includes('ECONNRESET')) return 'reset';
  return 'handshake_failed';
}
