import tls from 'node:tls';
import { parseSpiffeId, spiffeIdOfCertificate } from '../core/spiffe-id.ts';
import type { WorkloadCredentials } from './cert-manager.ts';

/**
 * TLS settings for sidecar-to-sidecar traffic: TLS 1.3 preferred, 1.2 the
 * minimum, our chain and key, and only the mesh trust bundle as roots (never
 * the system store: a public CA must not vouch for a workload).
 */
export function meshSecureContextOptions(creds: WorkloadCredentials): tls.SecureContextOptions {
  return {
    key: creds.keyPem,
    cert: creds.chainPem.join(''),
    ca: [...creds.trustBundlePem],
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
  };
}

/** The inbound mTLS server: client certificates required and chain-verified by OpenSSL. */
export function createMeshTlsServer(creds: WorkloadCredentials, opts: { handshakeTimeoutMs: number }): tls.Server {
  return tls.createServer({
    ...meshSecureContextOptions(creds),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2', 'http/1.1'],
    handshakeTimeout: opts.handshakeTimeoutMs,
  });
}

/** Swaps new credentials into a live server: new handshakes use them, open connections carry on. */
export function rotateServerCredentials(server: tls.Server, creds: WorkloadCredentials): void {
  server.setSecureContext(meshSecureContextOptions(creds));
}

/**
 * After OpenSSL verified the chain and validity: the peer must be a leaf
 * (OpenSSL accepts a cA certificate as a client's own; the X.509-SVID spec
 * says a leaf never sets cA, and a CA's key signs certificates, not
 * handshakes) carrying exactly one SPIFFE ID, of our trust domain.
 */
export function verifyMeshPeer(socket: tls.TLSSocket, trustDomain: string): { principal: string } | { refused: string } {
  if (!socket.authorized) return { refused: 'untrusted_certificate' };
  const cert = socket.getPeerCertificate();
  if (cert.ca) return { refused: 'not_a_client_certificate' };
  const id = spiffeIdOfCertificate(cert.subjectaltname);
  const parsed = id ? parseSpiffeId(id) : undefined;
  if (!id || !parsed) return { refused: 'no_spiffe_id' };
  if (parsed.trustDomain !== trustDomain) return { refused: 'foreign_trust_domain' };
  return { principal: id };
}

class PeerIdentityError extends Error {
  override readonly name = 'PeerIdentityError';
  readonly code = 'MESHGATE_PEER_IDENTITY';
}

/** Outbound: the server's SPIFFE ID must be one the registry expects for the destination. */
export function expectIdentity(expected: ReadonlySet<string>): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const id = spiffeIdOfCertificate(cert.subjectaltname);
    if (id && expected.has(id)) return undefined;
    return new PeerIdentityError(`upstream presented ${id ?? 'no SPIFFE ID'}, expected one of ${[...expected].join(', ')}`);
  };
}
