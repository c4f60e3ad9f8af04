import { H2CClient, Pool } from 'undici';
import type { Dispatcher } from 'undici';

export type UpstreamProtocol = 'http1' | 'http2';

export interface UpstreamPoolOptions {
  readonly connectTimeoutMs: number;
  readonly maxConnections: number;
  /** Idle upstream connections are closed after this. */
  readonly keepAliveTimeoutMs: number;
}

/**
 * The connections to one origin: an HTTP/1.1 keep-alive pool and, created on
 * first use, one multiplexed HTTP/2 (h2c) connection. The sidecar speaks the
 * protocol the caller spoke unless the service config pins one, so gRPC stays
 * on HTTP/2 end to end and HTTP/1.1 apps are not forced onto h2.
 */
export interface UpstreamPool {
  readonly origin: string;
  dispatcher(protocol: UpstreamProtocol): Dispatcher;
  close(): Promise<void>;
  destroy(): Promise<void>;
}

export function createUpstreamPool(origin: string, opts: UpstreamPoolOptions): UpstreamPool {
  let h1: Pool | undefined;
  let h2: H2CClient | undefined;
  return {
    origin,
    dispatcher(protocol) {
      if (protocol === 'http2') {
        h2 ??= new H2CClient(origin, {
          connect: { timeout: opts.connectTimeoutMs },
          keepAliveTimeout: opts.keepAliveTimeoutMs,
        });
        return h2;
      }
      h1 ??= new Pool(origin, {
        connections: opts.maxConnections,
        connect: { timeout: opts.connectTimeoutMs },
        keepAliveTimeout: opts.keepAliveTimeoutMs,
        pipelining: 1,
      });
      return h1;
    },
    async close() {
      await Promise.all([h1?.close(), h2?.close()]);
    },
    async destroy() {
      await Promise.all([h1?.destroy(), h2?.destroy()]);
    },
  };
}
