import { readFileSync } from 'node:fs';
import { connect as netConnect, createServer as netServer } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as tlsServer } from 'node:tls';

/*
 * One side of a pair of Node relays chained over mutual TLS 1.3 (Node's
 * floors on the mesh path: byte-pipe.mjs, http-pipe.mjs), one upstream
 * connection per caller connection:
 *
 *   front <certs> <back port>: plain listener -> mTLS 1.3 client (frontend.pem, server name `orders`)
 *   back <certs> <app port>:   mTLS 1.3 listener (orders.pem, client certificate required) -> app
 *   plain - <app port>:        plain listener -> app (Node's floor for the one hop, next to one nginx)
 *
 * The certificates are the nginx pair's (lib/target-nginx-mtls.ts makes them).
 * Prints {"port": N} once listening, like the other bench servers. Plain
 * JavaScript: a .ts entry loads Node's TypeScript stripper, which would count
 * in the rows' memory columns.
 *
 * @param {string} script the relay's file name, for its usage line
 * @param {(caller: import('node:net').Socket, upstream: import('node:net').Socket) => void} relay what joins a caller's connection and its upstream one
 */
export function servePairSide(script, relay) {
  const [side, certs, target] = process.argv.slice(2);
  const targetPort = Number(target);
  if ((side !== 'front' && side !== 'back' && side !== 'plain') || !certs || !Number.isInteger(targetPort)) {
    process.stderr.write(`usage: ${script} front|back|plain <certificate dir, - for plain> <target port>\n`);
    process.exit(2);
  }
  const read = (name) => readFileSync(join(certs, name));
  const ca = side === 'plain' ? undefined : read('ca.pem');
  const own = side === 'plain' ? {} : side === 'front' ? { cert: read('frontend.pem'), key: read('frontend.key') } : { cert: read('orders.pem'), key: read('orders.key') };
  const server =
    side === 'plain'
      ? netServer({ noDelay: true }, (caller) => relay(caller, netConnect({ host: '127.0.0.1', port: targetPort, noDelay: true })))
      : side === 'front'
      ? netServer({ noDelay: true }, (caller) => {
          const upstream = tlsConnect({ host: '127.0.0.1', port: targetPort, servername: 'orders', ca, ...own, minVersion: 'TLSv1.3' });
          upstream.setNoDelay(true);
          relay(caller, upstream);
        })
      : tlsServer({ ca, ...own, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (caller) => {
          caller.setNoDelay(true);
          relay(caller, netConnect({ host: '127.0.0.1', port: targetPort, noDelay: true }));
        });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

/**
 * Either side failing or closing ends the other: nothing is left half-open.
 * @param {import('node:net').Socket} a @param {import('node:net').Socket} b
 */
export function closeTogether(a, b) {
  for (const [one, other] of [
    [a, b],
    [b, a],
  ]) {
    one.on('error', () => other.destroy());
    one.on('close', () => other.destroy());
  }
}
