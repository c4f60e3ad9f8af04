import * as grpc from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';

export interface ServingMaterial {
  readonly keyPem: string;
  /** Serving leaf, then intermediates. */
  readonly certChainPem: string;
  /** Roots (and intermediates, to help chain building) that client certificates are checked against. */
  readonly clientCaPem: string;
}

export interface ServingCredentials {
  readonly credentials: grpc.ServerCredentials;
  /** Swaps certificate and client CAs into the live listener; open connections keep theirs. */
  update(material: ServingMaterial): void;
}

/**
 * grpc-js's createSsl(…, true) makes client certificates mandatory (Node's
 * rejectUnauthorized defaults to true). The CA needs them optional: a first
 * request brings a bootstrap token and no certificate, a renewal brings a
 * certificate and no token. So this subclass sets requestCert without
 * rejectUnauthorized; grpc-js then reports a client certificate in the call's
 * auth context only when it verified (socket.authorized). The base class's
 * watcher protocol is what createSsl uses too; update() goes through it so
 * the http2 server gets setSecureContext() without a restart.
 */
class OptionalClientCertCredentials extends grpc.ServerCredentials {
  constructor(context: SecureContextOptions) {
    super({ requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, context);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  swap(context: SecureContextOptions): void {
    this.updateSecureContextOptions(context);
  }
}

const contextOf = (m: ServingMaterial): SecureContextOptions => ({ key: m.keyPem, cert: m.certChainPem, ca: m.clientCaPem });

export function createServingCredentials(initial: ServingMaterial): ServingCredentials {
  const credentials = new OptionalClientCertCredentials(contextOf(initial));
  return {
    credentials,
    update(material) {
      credentials.swap(contextOf(material));
    },
  };
}
