import type { IdentityConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { identityRetry } from '../identity/ca-probe.ts';
import { createCaSigner } from '../identity/ca-signer.ts';
import type { CertificateManager, WorkloadCredentials } from '../identity/cert-manager.ts';
import { createCertificateManager } from '../identity/cert-manager.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { WorkloadIdentity } from './mesh-identity.ts';
import { meshIdentity, workloadSpiffeId } from './mesh-identity.ts';

export type { WorkloadIdentity } from './mesh-identity.ts';

interface IdentityDeps {
  clock: Clock;
  random: Random;
  logger: Logger;
  signal: AbortSignal;
}

/**
 * The certificate loop of this workload, signing through `meshgate ca`, with
 * its first certificate (retried while the CA is away). A sidecar with
 * several workers runs it in its primary only.
 */
export async function startCertificateManager(
  config: IdentityConfig,
  workload: { service: string; namespace: string },
  deps: IdentityDeps,
): Promise<{ spiffeId: string; manager: CertificateManager; first: WorkloadCredentials }> {
  const spiffeId = workloadSpiffeId(config, workload);
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
  return { spiffeId, manager, first };
}

/** Gets the first certificate and keeps every TLS consumer of this process current (mesh-identity.ts). */
export async function startWorkloadIdentity(config: IdentityConfig, workload: { service: string; namespace: string }, deps: IdentityDeps & { handshakeTimeoutMs: number }): Promise<WorkloadIdentity> {
  const { spiffeId, manager, first } = await startCertificateManager(config, workload, deps);
  return meshIdentity(manager, first, config, spiffeId, deps);
}
