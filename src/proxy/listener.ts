import type * as http2 from 'node:http2';
import type { Socket } from 'node:net';
import net from 'node:net';
import type tls from 'node:tls';
import type { LimitsConfig } from '../config/sidecar-schema.ts';
import { listenOn } from '../core/listen.ts';
import type { ReasonCode } from '../core/reason-codes.ts';
import { respond } from '../core/verdict.ts';
import { replyRaw } from '../errors/raw-reply.ts';
import { sendVerdict } from '../errors/reply.ts';
import type { HeadDeadline, ListenerHooks } from './connection-guard.ts';
import { connectionKey, createSourceCounter, HEAD_TIMED_OUT, requestRejection, startHeadDeadline } from './connection-guard.ts';
import type { DownstreamRequest, DownstreamResponse } from './downstream.ts';
import { DownstreamTimeoutError } from './downstream.ts';
import { createH1Server } from './h1-server-connection.ts';
import { H2_CODEC_BOUNDS, watchCodecRefusals } from './h2-codec-guard.ts';
import { NGHTTP2_NO_ERROR } from './h2-error-codes.ts';
import { createResetFloodGuard } from './h2-reset-guard.ts';

export type { ListenerHooks } from './connection-guard.ts';

export type { DownstreamRequest, DownstreamResponse } from './downstream.ts';
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
  /** `reusePort`: the port is shared with the sidecar's other worker processes (see core/listen.ts). */
  listen(port: number, host: string, opts?: { readonly reusePort?: boolean }): Promise<net.AddressInfo>;
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

/**
 * Our response is complete but the caller is still sending (an upload the
 * upstream answered early, or one a timeout cut short): end the stream with
 * RST_STREAM NO_ERROR, as RFC 9113 §8.1 allows, so it stops sending and its
 * stream slot is free again. Node does this itself only for a request body
 * nobody read.
 */
function endUnfinishedRequest(stream: http2.ServerHttp2Stream): void {
  if (!stream.destroyed && !stream.closed && stream.state.remoteClose === 0) stream.close(NGHTTP2_NO_ERROR);
}

/**
 * Takes an accepted connection over before the listener reads it (transparent
 * interception, src/interception/): it calls `serve` for a connection the HTTP
 * servers should have, and owns every other one.
 */
export type ConnectionDivert = (socket: Socket, serve: (socket: Socket) => void) => void;

/** TLS records start with a handshake content type byte (RFC 8446 §5.1). */
const TLS_HANDSHAKE = 0x16;

export interface ListenerOptions {
  /** Mutual TLS on the port; none: cleartext. */
  readonly tls?: ListenerTls;
  readonly hooks?: ListenerHooks;
  readonly divert?: ConnectionDivert;
  /**
   * What its HTTP/1.1 connections read into, one read at a time: the role makes one for all its listeners
   * (./socket-reads.ts, createReadBuffer), apart from its upstream sockets' one.
   */
  readonly readBuffer: Buffer;
}

/**
 * A cleartext listener that serves HTTP/1.1 and HTTP/2 with prior knowledge
 * (h2c) on one port. Node has no server that does both without TLS, so we peek
 * at the first bytes for the HTTP/2 connection preface (RFC 9113 §3.4) and hand
 * the socket to the matching server. Every hardening limit is set explicitly.
 */
export function createHttpListener(name: string, limits: LimitsConfig, handler: RequestHandler, options: ListenerOptions): HttpListener {
  const { tls: tlsOptions, hooks = {}, divert, readBuffer } = options;
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  /** Calls in flight per HTTP/2 session, so an idle timeout can tell each how it ended. */
  const h2Calls = new WeakMap<object, Set<http2.Http2ServerRequest>>();
  const counted: RequestHandler = (req, res) => {
    // HTTP/2: node drops header fields past maxHeaderListPairs silently; a request that hit the cap is refused instead.
    // (HTTP/1.1's parser refuses them itself, ./h1-request-parser.ts.)
    if (req.httpVersion === '2.0' && fieldCount(req) > limits.maxHeadersCount) {
      sendVerdict(res, respond('request.headers_too_large', `more than ${limits.maxHeadersCount} header fields`), { grpc: false, requestId: 'none' });
      hooks.onRejected?.(requestRejection(req, 'request.headers_too_large', 'none'));
      return;
    }
    // A stream the caller already reset has no session any more (rapid reset): nothing to track.
    const session = req.httpVersion === '2.0' ? (req as http2.Http2ServerRequest).stream.session : undefined;
    let calls: Set<http2.Http2ServerRequest> | undefined;
    if (session) {
      calls = h2Calls.get(session);
      if (!calls) h2Calls.set(session, (calls = new Set()));
      calls.add(req as http2.Http2ServerRequest);
      // The stream's 'finish', not the response's: Http2ServerResponse emits 'finish' only once the stream closes.
      const stream = (req as http2.Http2ServerRequest).stream;
      stream.once('finish', () => endUnfinishedRequest(stream));
    }
    inFlight++;
    let done = false;
    // One listener pair per call does all the bookkeeping of its end.
    const finish = (): void => {
      if (done) return;
      done = true;
      calls?.delete(req as http2.Http2ServerRequest);
      inFlight--;
      if (inFlight === 0 && idleWaiters.length > 0) {
        for (const wake of idleWaiters) wake();
        idleWaiters = [];
      }
    };
    // on, not once: finish runs once by itself, and once's wrapper (a bound function and its state) would be made twice per call.
    res.on('close', finish);
    res.on('finish', finish);
    handler(req, res);
  };

  const lingerMs = limits.headersTimeout;
  const rejected = (socket: Socket, code: ReasonCode<'data'>, protocol: '1.1' | '2'): void => hooks.onRejected?.({ code, address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0, protocol });
  /** Answers on a socket no response owns (408, 400, 431), logs it, and closes. */
  const refuseRaw = (socket: Socket, refusal: { code: ReasonCode<'data'>; reason: string }): void => {
    if (replyRaw(socket, refusal.code, refusal.reason, lingerMs)) rejected(socket, refusal.code, '1.1');
  };
  const h1 = createH1Server(limits, { onRequest: counted, refuse: refuseRaw }, readBuffer);

  // The HTTP/2 server is made for the first HTTP/2 connection: loading node:http2 (and node:http, which it
  // loads) cost a plaintext sidecar ~15 ms of start-up (bench/README.md, "Cost per pod"), and many sidecars
  // never get an HTTP/2 caller.
  let h2: http2.Http2Server | undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  // Peers are verified once per connection; requests find their principal by socket (HTTP/1.1) or session (HTTP/2).
  const socketPrincipals = new WeakMap<object, string>();
  const sessionPrincipals = new WeakMap<object, string>();
  let handshakePrincipal: string | undefined;
  // Until its first HEADERS frame is in, an HTTP/2 connection has its head deadline; then the idle timeout applies.
  let handingOff: HeadDeadline | undefined;
  const createH2Server = (): http2.Http2Server => {
    const server = process.getBuiltinModule('node:http2').createServer(
      {
        maxSessionMemory: limits.http2MaxSessionMemory,
        maxHeaderListPairs: limits.maxHeadersCount + 1 + PSEUDO_HEADERS,
        settings: {
          maxConcurrentStreams: limits.http2MaxConcurrentStreams,
          maxHeaderListSize: limits.maxHeaderSize,
          enablePush: false,
        },
        // PING and SETTINGS floods meet nghttp2's limit of 1 000 unanswered control frames, CONTINUATION
        // floods its limit per header block, invalid frames and refused streams ours (h2-codec-guard.ts);
        // rapid reset is ours too (h2-reset-guard.ts), with nghttp2's own reset limit behind it.
        ...H2_CODEC_BOUNDS,
      },
      counted,
    );
    server.setTimeout(limits.idleTimeout);
    server.on('session', (session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      const resets = createResetFloodGuard(session, limits.http2RapidResetMinStreams, () => hooks.onAbuse?.('http2_rapid_reset', session.socket?.remoteAddress));
      watchCodecRefusals(session, limits.http2MaxConcurrentStreams, hooks, resets);
      // 'session' fires synchronously inside server.emit('connection'), while handshakePrincipal and handingOff are set.
      if (handshakePrincipal !== undefined) sessionPrincipals.set(session, handshakePrincipal);
      const deadline = handingOff;
      if (!deadline) return;
      session.once('stream', () => deadline.clear());
      session.once('close', () => deadline.clear());
      deadline.onExpiry(() => {
        // No stream exists to answer on: the connection is closed (GOAWAY), and logged as the 408 it would get.
        const socket = session.socket as Socket;
        rejected(socket, 'request.timeout', '2');
        session.destroy();
      });
    });
    server.on('timeout', (session: http2.ServerHttp2Session) => {
      // Idle with calls in flight: each is closed as meshgate's timeout, not as a caller that left (see ./downstream.ts).
      for (const req of h2Calls.get(session) ?? []) {
        const phase = req.stream.state?.remoteClose ? 'response' : 'request';
        req.stream.destroy(new DownstreamTimeoutError(phase));
      }
      session.destroy();
    });
    return server;
  };
  const toH2 = (socket: Socket, deadline: HeadDeadline, principal?: string): void => {
    const server = (h2 ??= createH2Server());
    handingOff = deadline;
    handshakePrincipal = principal;
    try {
      server.emit('connection', socket);
    } finally {
      handingOff = undefined;
      handshakePrincipal = undefined;
    }
  };
  /** Hands an HTTP/1.1 connection to the codec; its first head keeps the connection's deadline. */
  const toH1 = (socket: Socket, deadline: HeadDeadline): void => {
    deadline.onExpiry(() => refuseRaw(socket, HEAD_TIMED_OUT));
    h1.serve(socket, () => deadline.clear());
  };

  /** Raw sockets in their TLS handshake, by connection: the handshake has a deadline of its own. */
  const handshakes = new Map<string, HeadDeadline>();
  if (tlsOptions) {
    tlsOptions.server.on('secureConnection', (tlsSocket: tls.TLSSocket) => {
      const key = connectionKey(tlsSocket);
      handshakes.get(key)?.clear();
      handshakes.delete(key);
      const verdict = tlsOptions.verifyPeer(tlsSocket);
      if ('refused' in verdict) {
        tlsOptions.onRefused(verdict.refused, 'peer refused after handshake');
        tlsSocket.destroy();
        return;
      }
      if (verdict.principal !== undefined) socketPrincipals.set(tlsSocket, verdict.principal);
      // The request head gets its own headersTimeout once the handshake is done.
      const deadline = startHeadDeadline(limits.headersTimeout, () => refuseRaw(tlsSocket, HEAD_TIMED_OUT));
      tlsSocket.once('close', () => deadline.clear());
      if (tlsSocket.alpnProtocol === 'h2') toH2(tlsSocket, deadline, verdict.principal);
      else toH1(tlsSocket, deadline);
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
  /** Enough of a new connection's first bytes to route it: TLS by its first byte, HTTP/2 by its preface, HTTP/1.1 by anything else. */
  const decided = (seen: Buffer): boolean => {
    if (seen[0] === TLS_HANDSHAKE) return true;
    const n = Math.min(seen.length, H2_PREFACE.length);
    if (seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return seen.length >= H2_PREFACE.length;
    return true; // anything else is HTTP/1.1 (or refused): its parser judges every byte
  };
  const handshakeTimedOut = (socket: Socket): void => {
    tlsOptions!.onRefused('handshake_timeout', `no TLS handshake within limits.headersTimeout (${limits.headersTimeout} ms)`);
    socket.destroy();
  };

  const sockets = new Set<Socket>();
  /** From accept (or from the divert handing it back) to a server: sniff, then TLS, HTTP/2 or HTTP/1.1. */
  const serve = (socket: Socket): void => {
    // One deadline to the first request head (plaintext) or to the end of the TLS handshake.
    const deadline = startHeadDeadline(limits.headersTimeout, () => {
      // Nothing decided yet: a client that sent nothing (or part of a request line) on a port that takes plaintext gets a 408.
      if (tlsOptions?.mode === 'STRICT') handshakeTimedOut(socket);
      else refuseRaw(socket, HEAD_TIMED_OUT);
    });
    socket.once('close', () => deadline.clear());
    readUntil(socket, decided, (seen) => {
      const where = route(seen[0]!);
      if (where === 'refuse') {
        deadline.clear();
        tlsOptions!.onRefused('plaintext', 'plaintext on a STRICT mTLS port');
        socket.destroy();
        return;
      }
      if (where === 'tls') {
        const key = connectionKey(socket);
        handshakes.set(key, deadline);
        socket.once('close', () => {
          if (handshakes.get(key) === deadline) handshakes.delete(key);
        });
        deadline.onExpiry(() => handshakeTimedOut(socket));
        tlsOptions!.server.emit('connection', socket);
        return;
      }
      // The HTTP/2 session drains bytes already buffered on the socket itself.
      if (isH2Preface(seen)) toH2(socket, deadline);
      else toH1(socket, deadline);
    });
  };
  const sources = createSourceCounter(limits.maxConnectionsPerSource);
  const server = net.createServer({ noDelay: true }, (socket) => {
    const source = socket.remoteAddress;
    if (source === undefined) {
      socket.destroy(); // already gone
      return;
    }
    if (!sources.admit(source)) {
      hooks.onConnectionRefused?.('max_connections_per_source', source);
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      sources.release(source);
    });
    if (divert) divert(socket, serve);
    else serve(socket);
  });
  server.maxConnections = limits.maxConnections;
  server.on('drop', (drop?: { remoteAddress?: string }) => hooks.onConnectionRefused?.('max_connections', drop?.remoteAddress ?? ''));

  return {
    name,
    listen: (port, host, opts) => listenOn(server, port, host, opts),
    stopAccepting() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      h1.drain();
      for (const session of sessions) session.close();
      return closed;
    },
    destroy() {
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
 * Reads until `enough` says the bytes so far decide where a connection goes,
 * puts them back, and calls `dispatch`. The connection's head deadline (set
 * by the caller) bounds the wait.
 */
function readUntil(socket: Socket, enough: (seen: Buffer) => boolean, dispatch: (seen: Buffer) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    if (!enough(seen)) return;
    socket.off('data', onData);
    socket.off('error', onError);
    socket.pause();
    socket.unshift(seen);
    dispatch(seen);
  };
  const onError = (): void => {
    socket.destroy();
  };
  socket.on('data', onData);
  socket.on('error', onError);
}

function isH2Preface(seen: Buffer): boolean {
  return seen.length >= H2_PREFACE.length && seen.subarray(0, H2_PREFACE.length).equals(H2_PREFACE);
}

/** Bounded reasons for the handshake error counter (never raw OpenSSL strings as labels). */
function classifyHandshakeError(reason: string): string {
  const text = reason.toUpperCase();
  if (text.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || text.includes('NO CERTIFICATE')) return 'no_client_certificate';
  if (text.includes('EXPIRED')) return 'certificate_expired';
  if (text.includes('NOT_YET_VALID')) return 'certificate_not_yet_valid';
  // A certificate without the clientAuth extended key usage (e.g. a server's own).
  if (text.includes('INVALID_PURPOSE')) return 'not_a_client_certificate';
  // The handshake signature (CertificateVerify) does not verify with the certificate's key: a certificate without its key.
  if (/^ERR_SSL_(?:PROVIDER_SIGNATURE_FAILURE|BAD_SIGNATURE)\b/.test(text.trim())) return 'key_mismatch';
  if (/UNSUPPORTED_PROTOCOL|WRONG_VERSION_NUMBER|VERSION_TOO_LOW/.test(text)) return 'unsupported_protocol';
  if (/UNKNOWN_CA|VERIFY_FAILED|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|SIGNATURE_FAILURE|INVALID_CA/.test(text)) return 'untrusted_certificate';
  if (text.includes('ECONNRESET')) return 'reset';
  return 'handshake_failed';
}
