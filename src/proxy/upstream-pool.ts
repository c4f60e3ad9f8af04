import net from 'node:net';
import type tls from 'node:tls';
import type { buildConnector, Dispatcher } from 'undici';
import type { Connect, UpstreamDispatcher } from './h1-pool.ts';
import { createH1Pool } from './h1-pool.ts';
import { iterableRequestBodies } from './h2-iterable-body.ts';
import { DispatchRefusedError } from './upstream-errors.ts';

export type UpstreamProtocol = 'http1' | 'http2';

export interface UpstreamPoolOptions {
  readonly connectTimeoutMs: number;
  readonly maxConnections: number;
  /** Idle upstream connections are closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** The sidecar's one buffer its HTTP/1.1 upstream sockets read into (./socket-reads.ts, createReadBuffer). */
  readonly readBuffer: Buffer;
}

/** Mutual TLS to the upstream (a peer sidecar). */
export interface UpstreamTls {
  /** The context of the current workload certificate; read per new connection so rotation needs no pool rebuild. */
  secureContext(): tls.SecureContext | undefined;
  /** Called after chain verification: the server's SPIFFE ID must be one the destination may have. */
  checkServerIdentity(host: string, cert: tls.PeerCertificate): Error | undefined;
}

/**
 * The connections to one origin: an HTTP/1.1 keep-alive pool and, created on
 * first use, one multiplexed HTTP/2 connection (h2c in plaintext, ALPN h2 over
 * mTLS). The sidecar speaks the protocol the caller spoke unless the service
 * config pins one, so gRPC stays on HTTP/2 end to end and HTTP/1.1 apps are not
 * forced onto h2.
 */
export interface UpstreamPool {
  readonly origin: string;
  dispatcher(protocol: UpstreamProtocol): UpstreamDispatcher;
  /**
   * Later calls get fresh connections; calls in flight finish on the old ones,
   * which then close. Used after a certificate rotation so new handshakes
   * carry the new certificate and trust bundle.
   */
  refresh(): void;
  close(): Promise<void>;
  destroy(): Promise<void>;
}

export function createUpstreamPool(address: string, opts: UpstreamPoolOptions, mtls?: UpstreamTls): UpstreamPool {
  const origin = `${mtls ? 'https' : 'http'}://${address}`;
  let h1: UpstreamDispatcher | undefined;
  let h2: UpstreamDispatcher | undefined;
  const common = { keepAliveTimeout: opts.keepAliveTimeoutMs };
  return {
    origin,
    dispatcher(protocol) {
      if (protocol === 'http2') {
        h2 ??= loadedOnFirstCall(({ Client, H2CClient }) =>
          (mtls
            ? new Client(origin, { ...common, allowH2: true, connect: meshConnector(mtls, ['h2'], opts.connectTimeoutMs) })
            : new H2CClient(origin, { ...common, connect: { timeout: opts.connectTimeoutMs } })
          ).compose(iterableRequestBodies),
        );
        return h2;
      }
      h1 ??= createH1Pool({
        connect: mtls ? meshConnect(address, mtls, opts.connectTimeoutMs) : plainConnect(address, opts.connectTimeoutMs),
        maxConnections: opts.maxConnections,
        keepAliveTimeoutMs: opts.keepAliveTimeoutMs,
        maxHeadBytes: MAX_RESPONSE_HEAD_BYTES,
        readBuffer: opts.readBuffer,
      });
      return h1;
    },
    refresh() {
      const old = [h1, h2];
      h1 = undefined;
      h2 = undefined;
      for (const dispatcher of old) void dispatcher?.close().catch(() => {});
    },
    async close() {
      await Promise.all([h1?.close(), h2?.close()]);
    },
    async destroy() {
      await Promise.all([h1?.destroy(), h2?.destroy()]);
    },
  };
}

/**
 * An HTTP/2 dispatcher made on the first call: undici is loaded only by a sidecar that has an HTTP/2
 * upstream to talk to (its import is ~0.7 MB of source held by V8 and tens of milliseconds of start-up).
 * Calls made while it loads wait for it; a field undici refuses fails the call as `dispatch` would throw.
 */
function loadedOnFirstCall(create: (undici: typeof import('undici')) => Dispatcher): UpstreamDispatcher {
  let ready: Dispatcher | undefined;
  let loading: Promise<Dispatcher> | undefined;
  const load = (): Promise<Dispatcher> => {
    loading ??= import('undici').then((undici) => (ready = create(undici)));
    return loading;
  };
  return {
    dispatch(opts, handler) {
      if (ready) return ready.dispatch(opts, handler);
      load().then(
        (dispatcher) => {
          try {
            dispatcher.dispatch(opts, handler);
          } catch (err) {
            handler.onResponseError?.(undefined as never, new DispatchRefusedError((err as Error).message));
          }
        },
        (err: Error) => handler.onResponseError?.(undefined as never, err),
      );
      return true;
    },
    close: () => (loading ? loading.then((d) => d.close()) : Promise.resolve()),
    destroy: () => (loading ? loading.then((d) => d.destroy()) : Promise.resolve()),
  } as UpstreamDispatcher;
}

/** node:http's limit on a head (--max-http-header-size) and undici's default. */
const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;

function hostAndPort(address: string): { host: string; port: number } {
  const url = new URL(`http://${address}`);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) };
}

function plainConnect(address: string, timeoutMs: number): Connect {
  const { host, port } = hostAndPort(address);
  return (onread, done) => settleConnect(net.connect({ host, port, onread }), 'connect', timeoutMs, 'connect timeout', done);
}

function meshConnect(address: string, mtls: UpstreamTls, timeoutMs: number): Connect {
  const { host, port } = hostAndPort(address);
  return (onread, done) => meshSocket(mtls, ['http/1.1'], host, port, timeoutMs, onread, done);
}

/** undici connector for mesh mTLS (HTTP/2 upstreams): see meshSocket. */
function meshConnector(mtls: UpstreamTls, alpn: string[], timeoutMs: number): buildConnector.connector {
  return (options, callback) => meshSocket(mtls, alpn, options.hostname, Number(options.port), timeoutMs, undefined, (err, socket) => (err ? callback(err, null) : callback(null, socket!)));
}

/** An mTLS socket to a peer sidecar: our certificate, the mesh roots, the expected SPIFFE ID, a connect deadline. */
function meshSocket(
  mtls: UpstreamTls,
  alpn: string[],
  host: string,
  port: number,
  timeoutMs: number,
  onread: net.OnReadOpts | undefined,
  done: (err: Error | null, socket: net.Socket | null) => void,
): void {
  const secureContext = mtls.secureContext();
  if (!secureContext) {
    done(Object.assign(new Error('no workload certificate yet'), { code: 'ERR_TLS_NO_CERTIFICATE' }), null);
    return;
  }
  // node:tls is taken on the first mTLS connect: a plaintext sidecar never loads TLS (with src/telemetry/prom-client.ts, 2.8 MiB of its RSS; bench/README.md, "Cost per pod").
  const socket = process.getBuiltinModule('node:tls').connect({
    host,
    port,
    secureContext,
    ALPNProtocols: alpn,
    rejectUnauthorized: true,
    checkServerIdentity: mtls.checkServerIdentity,
    ...(onread && { onread }),
  });
  socket.setNoDelay(true);
  settleConnect(socket, 'secureConnect', timeoutMs, 'mTLS connect timeout', done);
}

/**
 * Hands `socket` over once `ready` fires, or its error (or UND_ERR_CONNECT_TIMEOUT after `timeoutMs`),
 * exactly once; a failed socket is destroyed and the listeners for the attempt are removed.
 */
function settleConnect<S extends net.Socket>(socket: S, ready: 'connect' | 'secureConnect', timeoutMs: number, timeoutMessage: string, done: (err: Error | null, socket: S | null) => void): void {
  const finish = (err: Error | null): void => {
    clearTimeout(timer);
    socket.off(ready, onReady);
    socket.off('error', finish);
    if (err) {
      socket.destroy();
      done(err, null);
    } else done(null, socket);
  };
  const onReady = (): void => finish(null);
  const timer = setTimeout(() => finish(Object.assign(new Error(timeoutMessage), { code: 'UND_ERR_CONNECT_TIMEOUT' })), timeoutMs);
  socket.once(ready, onReady);
  socket.once('error', finish);
}
