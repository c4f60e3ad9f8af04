import tls from 'node:tls';
import type { IdentityConfig, ServiceConfig } from '../config/sidecar-schema.ts';
import { formatSpiffeId } from '../core/spiffe-id.ts';
import type { CertificateManager, WorkloadCredentials } from '../identity/cert-manager.ts';
import { createMeshTlsServer, expectIdentity, meshSecureContextOptions, rotateServerCredentials, verifyMeshPeer } from '../identity/mesh-tls.ts';
import type { ListenerTls } from '../proxy/listener.ts';
import type { UpstreamTls } from '../proxy/upstream-pool.ts';

export interface WorkloadIdentity {
  readonly spiffeId: string;
  readonly manager: CertificateManager;
  /** Mutual TLS for the inbound listener. */
  listenerTls(mode: 'STRICT' | 'PERMISSIVE', onRefused: ListenerTls['onRefused']): ListenerTls;
  /** Mutual TLS towards one service, checking the identities it may present. */
  upstreamTls(service: ServiceConfig): UpstreamTls;
}

/** The SPIFFE ID this workload's certificates must carry. */
export function workloadSpiffeId(config: IdentityConfig, workload: { service: string; namespace: string }): string {
  return formatSpiffeId({ trustDomain: config.trustDomain, namespace: workload.namespace, serviceAccount: config.serviceAccount ?? workload.service });
}

/**
 * The TLS side of a workload identity, kept current from `manager`, whoever
 * runs it (this process's CA client, or a primary that hands certificates to
 * its workers): the inbound TLS server's context is swapped in place and
 * upstream pools read the cached client context per new connection, so a
 * rotation drops no connection. Loads no CA client (no gRPC, no x509).
 */
export function meshIdentity(manager: CertificateManager, first: WorkloadCredentials, config: IdentityConfig, spiffeId: string, deps: { handshakeTimeoutMs: number }): WorkloadIdentity {
  let clientContext = tls.createSecureContext(meshSecureContextOptions(first));
  const server = createMeshTlsServer(first, { handshakeTimeoutMs: deps.handshakeTimeoutMs });
  manager.onRotate((creds: WorkloadCredentials) => {
    clientContext = tls.createSecureContext(meshSecureContextOptions(creds));
    rotateServerCredentials(server, creds);
  });

  return {
    spiffeId,
    manager,
    listenerTls: (mode, onRefused) => ({
      mode,
      server,
      verifyPeer: (socket) => verifyMeshPeer(socket, config.trustDomain),
      onRefused,
    }),
    upstreamTls(service) {
      const expected = new Set(service.identities ?? [formatSpiffeId({ trustDomain: config.trustDomain, namespace: service.namespace, serviceAccount: service.name })]);
      return {
        // Fail closed: with an expired certificate no new mesh connection is made.
        secureContext: () => (manager.valid() ? clientContext : undefined),
        checkServerIdentity: expectIdentity(expected),
      };
    },
  };
}
