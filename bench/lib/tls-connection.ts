import { performance } from 'node:perf_hooks';
import tls from 'node:tls';

/*
 * One measured connection of `npm run bench:tls`: TCP connect, a full mutual
 * TLS handshake presenting the client certificate, one small HTTP/1.1 request
 * with `Connection: close`, the whole response read until the server closes.
 * Used by the load generator (lib/tls-client.ts) and by the harness for its
 * pre-flight check, so both do exactly the same thing.
 */

export interface TlsClientFiles {
  readonly keyPem: string;
  readonly certPem: string;
  readonly caPem: string;
}

export interface ConnectionTarget {
  readonly host: string;
  readonly port: number;
  readonly timeoutMs: number;
}

export type ConnectionOutcome =
  | {
      readonly ok: true;
      /** connect() to the end of the response. */
      readonly totalMs: number;
      /** connect() to 'secureConnect' (TCP + TLS handshake, client side). */
      readonly handshakeMs: number;
      readonly reused: boolean;
      readonly status: number;
      readonly body: string;
    }
  | { readonly ok: false; readonly error: string };

const REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n');

/**
 * One context for every connection: key, certificate and roots are parsed
 * once, not per connection (the client's own overhead would otherwise be
 * measured). It does not resume sessions: Node's client contexts keep no
 * internal session cache (only a `session` passed to connect() is offered),
 * and each connection checks isSessionReused() anyway.
 */
export function createClientContext(files: TlsClientFiles, groups: string | undefined): tls.SecureContext {
  return tls.createSecureContext({
    key: files.keyPem,
    cert: files.certPem,
    ca: files.caPem,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    ...(groups !== undefined ? { ecdhCurve: groups } : {}),
  });
}

/** What the handshake agreed on, read from the first connection of a target. */
export interface NegotiatedTls {
  readonly protocol: string;
  readonly cipher: string;
  readonly group: string;
  readonly alpn: string;
}

export function connectOnce(target: ConnectionTarget, context: tls.SecureContext, onSecure?: (socket: tls.TLSSocket) => void): Promise<ConnectionOutcome> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let handshakeMs = -1;
    let reused = false;
    let settled = false;
    const chunks: Buffer[] = [];
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      secureContext: context,
      ALPNProtocols: ['http/1.1'],
      // Never offer a saved session: every connection is a full handshake.
      session: undefined,
      rejectUnauthorized: true,
      // The chain is verified against the mesh roots; mesh certificates carry a
      // SPIFFE ID, no DNS name, so there is no host name to check.
      checkServerIdentity: () => undefined,
    });
    const finish = (outcome: ConnectionOutcome): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(outcome);
    };
    socket.setNoDelay(true);
    socket.setTimeout(target.timeoutMs, () => finish({ ok: false, error: `timeout after ${target.timeoutMs}ms` }));
    socket.once('secureConnect', () => {
      handshakeMs = performance.now() - t0;
      reused = socket.isSessionReused();
      onSecure?.(socket);
      socket.write(REQUEST);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
      const headEnd = text.indexOf('\r\n\r\n');
      if (handshakeMs < 0 || !status || headEnd < 0) {
        finish({ ok: false, error: `bad response ${JSON.stringify(text.slice(0, 80))}` });
        return;
      }
      finish({ ok: true, totalMs: performance.now() - t0, handshakeMs, reused, status: Number(status[1]), body: text.slice(headEnd + 4) });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => finish({ ok: false, error: err.code ?? err.message }));
    socket.once('close', () => finish({ ok: false, error: 'closed before the end of the response' }));
  });
}

export function negotiatedOf(socket: tls.TLSSocket): NegotiatedTls {
  const key = socket.getEphemeralKeyInfo() as { name?: string } | null;
  return {
    protocol: socket.getProtocol() ?? 'unknown',
    cipher: socket.getCipher()?.name ?? 'unknown',
    group: key?.name ?? 'unknown',
    alpn: typeof socket.alpnProtocol === 'string' ? socket.alpnProtocol : 'none',
  };
}
