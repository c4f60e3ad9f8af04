import tls from 'node:tls';
import type { IdentityConfig, ServiceConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { formatSpiffeId } from '../core/spiffe-id.ts';
import { identityRetry } from '../identity/ca-probe.ts';
import { createCaSigner } from '../identity/ca-signer.ts';
import type { CertificateManager, WorkloadCredentials } from '../identity/cert-manager.ts';
import { createCertificateManager } from '../identity/cert-manager.ts';
import { createMeshTlsServer, expectIdentity, meshSecureContextOptions, rotateServerCredentials, verifyMeshPeer } from '../identity/mesh-tls.ts';
import type { ListenerTls } from '../proxy/listener.ts';
import type { UpstreamTls } from '../proxy/upstream-pool.ts';
import type { Logger } from '../telemetry/logger.ts';

export interface WorkloadIdentity {
  readonly spiffeId: string;
  readonly manager: CertificateManager;
  /** Mutual TLS for the inbound listener. */
  listenerTls(mode: 'STRICT' | 'PERMISSIVE', onRefused: ListenerTls['onRefused']): ListenerTls;
  /** Mutual TLS towards one service, checking the identities it may present. */
  upstreamTls(service: ServiceConfig): UpstreamTls;
}

/**
 * Gets the first certificate (retrying while the CA is away) and keeps every
 * consumer current: the inbound TLS server's context is swapped in place and
 * upstream pools read the cached client context per new connection, so a
 * rotation drops no connection.
 */
export async function startWorkloadIdentity(
  config: IdentityConfig,
  workload: { service: string; namespace: string },
  deps: { clock: Clock; random: Random; logger: Logger; signal: AbortSignal; handshakeTimeoutMs: number },
): Promise<WorkloadIdentity> {
  const spiffeId = formatSpiffeId({ trustDomain: config.trustDomain, namespace: workload.namespace, serviceAccount: config.serviceAccount ?? workload.service });
  const manager = createCertificateManager(
    createCaSigner(config, deps.clock.now),
    {
      keyType: config.keyType,
      ttlSeconds: Math.round(config.ttl / 1000),
      renewFraction: config.renewFraction,
      jitterFraction: config.jitterFraction,
      expectedSpiffeId: spiffeId,
      retry: identityRetry(config),
    },
    { clock: deps.clock, random: deps.random, logger: deps.logger.child({ component: 'identity' }) },
  );
  void manager.run(deps.signal);
  const first = await manager.first(deps.signal);

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
