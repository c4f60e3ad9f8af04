import tls from 'node:tls';
import type { buildConnector, Dispatcher } from 'undici';
import { Client, H2CClient, Pool } from 'undici';
import { iterableRequestBodies } from './h2-iterable-body.ts';

export type UpstreamProtocol = 'http1' | 'http2';

export interface UpstreamPoolOptions {
  readonly connectTimeoutMs: number;
  readonly maxConnections: number;
  /** Idle upstream connections are closed after this. */
  readonly keepAliveTimeoutMs: number;
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
  dispatcher(protocol: UpstreamProtocol): Dispatcher;
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
  let h1: Pool | undefined;
  let h2: Dispatcher | undefined;
  const common = { keepAliveTimeout: opts.keepAliveTimeoutMs };
  return {
    origin,
    dispatcher(protocol) {
      if (protocol === 'http2') {
        h2 ??= (
          mtls
            ? new Client(origin, { ...common, allowH2: true, connect: meshConnector(mtls, ['h2'], opts.connectTimeoutMs) })
            : new H2CClient(origin, { ...common, connect: { timeout: opts.connectTimeoutMs } })
        ).compose(iterableRequestBodies);
        return h2;
      }
      h1 ??= new Pool(origin, {
        ...common,
        connections: opts.maxConnections,
        pipelining: 1,
        connect: mtls ? meshConnector(mtls, ['http/1.1'], opts.connectTimeoutMs) : { timeout: opts.connectTimeoutMs },
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

/** undici connector for mesh mTLS: our certificate, the mesh roots, the expected SPIFFE ID, a connect deadline. */
function meshConnector(mtls: UpstreamTls, alpn: string[], timeoutMs: number): buildConnector.connector {
  return (options, callback) => {
    const secureContext = mtls.secureContext();
    if (!secureContext) {
      callback(Object.assign(new Error('no workload certificate yet'), { code: 'ERR_TLS_NO_CERTIFICATE' }), null);
      return;
    }
    let done = false;
    const connectOptions: tls.ConnectionOptions = {
      host: options.hostname,
      port: Number(options.port),
      secureContext,
      ALPNProtocols: alpn,
      rejectUnauthorized: true,
      checkServerIdentity: mtls.checkServerIdentity,
    };
    const socket = tls.connect(connectOptions);
    socket.setNoDelay(true);
    const timer = setTimeout(() => finish(Object.assign(new Error('mTLS connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), timeoutMs);
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        socket.destroy();
        callback(err, null);
      } else {
        callback(null, socket);
      }
    };
    socket.once('secureConnect', () => finish(null));
    socket.once('error', (err) => finish(err));
  };
}
