import net from 'node:net';
import type { IdentityConfig } from '../config/sidecar-schema.ts';
import type { CertificateManagerOptions, ReachabilityProbe } from './cert-manager.ts';

/**
 * A TCP connect to `host:port` (`[v6]:port` too), closed at once. It tells
 * "nothing listens" (refused, unroutable, timed out) from "something
 * answers", which is all the certificate loop needs to know that the CA is
 * back: the signing attempt that follows does the real check.
 */
function tcpProbe(address: string, timeoutMs: number): ReachabilityProbe {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(address.slice(colon + 1));
  return (signal) =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve(false);
      const socket = net.connect({ host, port, timeout: timeoutMs });
      const done = (up: boolean): void => {
        signal.removeEventListener('abort', onAbort);
        socket.destroy();
        resolve(up);
      };
      const onAbort = (): void => done(false);
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => done(true));
      socket.once('timeout', () => done(false));
      socket.once('error', () => done(false));
    });
}

/** `identity.retry` as the certificate loop takes it (the sidecar's and the policy server's identity sections share it). */
export function identityRetry(config: Pick<IdentityConfig, 'retry' | 'ca'>): CertificateManagerOptions['retry'] {
  return {
    baseMs: config.retry.base,
    maxMs: config.retry.max,
    probeIntervalMs: config.retry.probeInterval,
    probe: tcpProbe(config.ca.address, Math.max(100, Math.min(config.retry.probeInterval, 1_000))),
  };
}
