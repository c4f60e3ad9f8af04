import type { SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';

export interface ServingMaterial {
  readonly keyPem: string;
  /** Serving leaf, then intermediates. */
  readonly certChainPem: string;
  /** Roots (and intermediates, to help chain building) that client certificates are checked against. */
  readonly clientCaPem: string;
}

export interface GrpcServerCredentials {
  readonly credentials: grpc.ServerCredentials;
  /** Swaps certificate and client CAs into the live listener; open connections keep theirs. */
  update(material: ServingMaterial): void;
}

/**
 * - `optional` (the CA): a first request brings a bootstrap token and no
 *   certificate, a renewal brings a certificate and no token. requestCert
 *   without rejectUnauthorized; grpc-js then reports a client certificate in
 *   the call's auth context only when it verified (socket.authorized).
 * - `required` (the policy server): the TLS handshake itself fails without a
 *   client certificate that chains to clientCaPem, so no call is ever
 *   dispatched for an anonymous peer.
 */
export type ClientCertificates = 'optional' | 'required';

/**
 * grpc-js's createSsl() gives no way to swap the certificate of a running
 * server. This subclass uses the base class's watcher protocol (what
 * createSsl uses too): update() reaches the http2 server as
 * setSecureContext() without a restart.
 */
class RotatingServerCredentials extends grpc.ServerCredentials {
  constructor(clientCertificates: ClientCertificates, context: SecureContextOptions) {
    super({ requestCert: true, rejectUnauthorized: clientCertificates === 'required', minVersion: 'TLSv1.2' }, context);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  swap(context: SecureContextOptions): void {
    this.updateSecureContextOptions(context);
  }
}

const contextOf = (m: ServingMaterial): SecureContextOptions => ({ key: m.keyPem, cert: m.certChainPem, ca: m.clientCaPem });

export function createGrpcServerCredentials(initial: ServingMaterial, opts: { clientCertificates: ClientCertificates }): GrpcServerCredentials {
  const credentials = new RotatingServerCredentials(opts.clientCertificates, contextOf(initial));
  return {
    credentials,
    update(material) {
      credentials.swap(contextOf(material));
    },
  };
}
