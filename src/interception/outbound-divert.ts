import type { Socket } from 'node:net';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { isLoopbackAddress } from '../core/loopback.ts';
import type { ConnectionDivert } from '../proxy/listener.ts';
import type { OriginalDestination, OriginalDstReader } from './original-dst.ts';
import { plainAddress, tagOriginalDestination } from './original-dst.ts';
import { classifyFirstBytes } from './protocol-sniff.ts';
import type { InterceptionReporter } from './reporter.ts';

/*
 * The outbound listener's first look at a captured connection:
 *
 *   not redirected (HTTP proxy use, 127.0.0.1:15001)  -> the HTTP servers, as without interception
 *   redirected, first bytes are HTTP/1.x or h2c        -> the HTTP servers: routed by Host/:authority;
 *                                                         an unknown host is http-passthrough.ts's
 *   redirected, another protocol (TLS, a database)     -> raw TCP to the original destination (ALLOW_ANY)
 *   redirected, silent for protocolDetectionTimeout    -> the same: a server-first protocol
 *   REGISTRY_ONLY and not HTTP                         -> closed, counted
 *   the destination is the sidecar itself              -> closed, counted (a loop)
 */

export interface OutboundDivertOptions {
  readonly reader: OriginalDstReader;
  readonly policy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  readonly detectionTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** Ports the sidecar listens on right now. */
  readonly ownPorts: () => readonly number[];
  readonly report: InterceptionReporter;
}

export interface OutboundDivert {
  readonly divert: ConnectionDivert;
  /** Relayed TCP connections now open. */
  relays(): number;
  /** Ends every relayed connection (drain). */
  destroy(): void;
}

export function createOutboundDivert(opts: OutboundDivertOptions): OutboundDivert {
  const relays = new Set<Socket>();
  // Local ends of the connections this sidecar dialled: seeing one arrive captured means the
  // sidecar's own traffic is being redirected (it does not run as --proxy-uid), a loop.
  const dialled = new Set<string>();
  const isOwnListener = (dst: OriginalDestination): boolean => opts.ownPorts().includes(dst.port) && isLocalAddress(dst.address);

  const relay = (client: Socket, dst: OriginalDestination, seen: Buffer): void => {
    const upstream = net.connect({ host: dst.address, port: dst.port, noDelay: true });
    relays.add(client);
    let key: string | undefined;
    const timer = setTimeout(() => upstream.destroy(new Error(`no connection within ${opts.connectTimeoutMs} ms`)), opts.connectTimeoutMs);
    upstream.once('connect', () => {
      clearTimeout(timer);
      key = `${plainAddress(upstream.localAddress ?? '')}:${upstream.localPort}`;
      dialled.add(key);
      if (seen.length > 0) upstream.write(seen);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // Before the connection stood, the app is told the way a refused connect would tell it: a reset.
      if (key === undefined) {
        opts.report.refused('outbound', 'connect_failed', dst, err.code ?? err.message);
        client.resetAndDestroy();
      } else {
        client.destroy();
      }
    });
    upstream.once('close', () => {
      clearTimeout(timer);
      if (key !== undefined) dialled.delete(key);
      client.destroy();
    });
    client.once('error', () => upstream.destroy());
    client.once('close', () => {
      relays.delete(client);
      upstream.destroy();
    });
  };

  const divert: ConnectionDivert = (socket, serve) => {
    const dst = opts.reader.read(socket);
    if (!dst) {
      serve(socket);
      return;
    }
    if (isOwnListener(dst) || dialled.has(`${plainAddress(socket.remoteAddress ?? '')}:${socket.remotePort}`)) {
      opts.report.refused('outbound', 'loop', dst, isOwnListener(dst) ? 'the original destination is a sidecar listener' : "the sidecar's own connection was captured: does it run as --proxy-uid?");
      socket.destroy();
      return;
    }
    tagOriginalDestination(socket, dst);
    let seen: Buffer = Buffer.alloc(0);
    const decide = (kind: 'http' | 'not_http' | 'server_first'): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.pause();
      if (kind === 'http') {
        socket.unshift(seen);
        serve(socket);
        socket.resume();
        return;
      }
      if (opts.policy === 'REGISTRY_ONLY') {
        opts.report.refused('outbound', 'registry_only', dst, kind === 'not_http' ? 'not HTTP' : 'server-first protocol');
        socket.destroy();
        return;
      }
      opts.report.passthrough(kind, dst);
      relay(socket, dst, seen);
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const kind = classifyFirstBytes(seen);
      if (kind !== 'more') decide(kind === 'http' ? 'http' : 'not_http');
    };
    const onError = (): void => {
      clearTimeout(timer);
      socket.destroy();
    };
    const timer = setTimeout(() => decide(seen.length === 0 ? 'server_first' : 'not_http'), opts.detectionTimeoutMs);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.once('close', () => clearTimeout(timer));
  };

  return {
    divert,
    relays: () => relays.size,
    destroy() {
      for (const socket of relays) socket.destroy();
    },
  };
}

/** Loopback, or an address of one of this host's (this pod's) interfaces. */
function isLocalAddress(address: string): boolean {
  if (isLoopbackAddress(address)) return true;
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) if (info.address === address) return true;
  }
  return false;
}
