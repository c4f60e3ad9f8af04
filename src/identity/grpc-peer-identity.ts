import { X509Certificate } from 'node:crypto';
import type { ServerUnaryCall } from '@grpc/grpc-js';
import type { Clock } from '../core/clock.ts';
import { parseSpiffeId, spiffeIdOfCertificate } from '../identity/spiffe-id.ts';
import { refuse } from './ca-reasons.ts';
import type { CaRefusal } from './ca-reasons.ts';
import type { WorkloadIdentity } from './workload-claims.ts';

/** grpc-js does not export the AuthContext type from its index. */
type AuthContext = ReturnType<ServerUnaryCall<unknown, unknown>['getAuthContext']>;

/**
 * The identity of a renewing caller, from the client certificate of the TLS
 * connection. grpc-js (1.10+) exposes it through `call.getAuthContext()`,
 * and only when OpenSSL verified it against the server's `ca` (the trust
 * bundle): `sslPeerCertificate` is absent for an unverified or missing
 * certificate. On top of that chain check, the certificate must be a
 * workload leaf (not a CA) of this trust domain with exactly one meshgate
 * SPIFFE ID, and valid now by the CA's own clock.
 *
 * undefined: no verified client certificate (the caller must bring a token).
 */
export function peerIdentity(authContext: AuthContext | null | undefined, trustDomain: string, clock: Clock): (WorkloadIdentity & { ok: true }) | CaRefusal | undefined {
  const raw = authContext?.sslPeerCertificate?.raw;
  if (!raw) return undefined;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(raw);
  } catch {
    return refuse('ca.peer_certificate', 'client certificate does not parse');
  }
  if (cert.ca) return refuse('ca.peer_certificate', 'client certificate is a CA certificate, not a workload certificate');
  const now = clock.now();
  if (new Date(cert.validTo).getTime() <= now || new Date(cert.validFrom).getTime() > now) {
    return refuse('ca.peer_certificate', 'client certificate is not valid now');
  }
  const uri = spiffeIdOfCertificate(cert.subjectAltName);
  const id = uri === undefined ? undefined : parseSpiffeId(uri);
  if (!id || id.trustDomain !== trustDomain) return refuse('ca.peer_certificate', `client certificate has no SPIFFE ID of trust domain ${trustDomain}`);
  return { ok: true, namespace: id.namespace, serviceAccount: id.serviceAccount, spiffeId: uri! };
}
