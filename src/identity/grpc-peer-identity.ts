import { X509Certificate } from 'node:crypto';
import type { ServerUnaryCall } from '@grpc/grpc-js';
import type { Clock } from '../core/clock.ts';
import { parseSpiffeId, spiffeIdOfCertificate } from '../core/spiffe-id.ts';

/** grpc-js does not export the AuthContext type from its index. */
export type GrpcAuthContext = ReturnType<ServerUnaryCall<unknown, unknown>['getAuthContext']>;

export interface GrpcPeer {
  readonly ok: true;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly spiffeId: string;
}

export interface GrpcPeerRefusal {
  readonly ok: false;
  /** Why the certificate names no workload of this trust domain; for the caller and the log. */
  readonly message: string;
}

/**
 * The workload identity of a gRPC caller, from the client certificate of the
 * TLS connection. grpc-js (1.10+) exposes it through `call.getAuthContext()`,
 * and only when OpenSSL verified it against the server's `ca` (the trust
 * bundle): `sslPeerCertificate` is absent for an unverified or missing
 * certificate. On top of that chain check, the certificate must be a
 * workload leaf (not a CA) of this trust domain with exactly one meshgate
 * SPIFFE ID, and valid now by the server's own clock.
 *
 * undefined: no verified client certificate.
 */
export function grpcPeerIdentity(authContext: GrpcAuthContext | null | undefined, trustDomain: string, clock: Clock): GrpcPeer | GrpcPeerRefusal | undefined {
  const raw = authContext?.sslPeerCertificate?.raw;
  if (!raw) return undefined;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(raw);
  } catch {
    return { ok: false, message: 'client certificate does not parse' };
  }
  if (cert.ca) return { ok: false, message: 'client certificate is a CA certificate, not a workload certificate' };
  const now = clock.now();
  if (new Date(cert.validTo).getTime() <= now || new Date(cert.validFrom).getTime() > now) {
    return { ok: false, message: 'client certificate is not valid now' };
  }
  const uri = spiffeIdOfCertificate(cert.subjectAltName);
  const id = uri === undefined ? undefined : parseSpiffeId(uri);
  if (!id || id.trustDomain !== trustDomain) return { ok: false, message: `client certificate has no SPIFFE ID of trust domain ${trustDomain}` };
  return { ok: true, namespace: id.namespace, serviceAccount: id.serviceAccount, spiffeId: uri! };
}
