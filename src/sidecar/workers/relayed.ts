import type { SidecarConfig } from '../../config/sidecar-schema.ts';
import type { Clock } from '../../core/clock.ts';
import type { CertificateManager, WorkloadCredentials } from '../../identity/cert-manager.ts';
import { validAt } from '../../identity/cert-manager.ts';
import { createExpiryTimer } from '../../identity/expiry-timer.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { PolicyReadiness } from '../policy/subscriber.ts';
import type { PolicyEnforcement } from '../policy-enforcement.ts';
import type { WorkloadPolicy } from '../workload-policy.ts';
import type { PolicyState } from './protocol.ts';

/*
 * A worker's certificate and policy: what its primary's CA client and
 * subscriber got, installed here through the same interfaces a single
 * sidecar's own would use, so the TLS contexts and the filter chain are
 * swapped exactly as on a rotation or a snapshot install in one process.
 */

/**
 * A CertificateManager whose certificates come from the primary. Validity is
 * read from the certificate and the clock, as the real one does: a worker
 * whose primary cannot renew fails closed at the same instant the primary does.
 */
interface RelayedCertificateManager extends CertificateManager {
  /** A worker starts with the primary's certificate: there always is one. */
  current(): WorkloadCredentials;
  install(creds: WorkloadCredentials): void;
}

export function createRelayedCertificateManager(first: WorkloadCredentials, deps: { clock: Clock; logger: Logger }): RelayedCertificateManager {
  let creds = first;
  let issued = 1;
  const rotateListeners: Array<(c: WorkloadCredentials) => void> = [];
  const expireListeners: Array<() => void> = [];

  const expiry = createExpiryTimer(
    deps.clock,
    () => creds,
    () => {
      for (const listener of expireListeners) listener();
    },
  );
  expiry.watch(first);

  return {
    current: () => creds,
    valid: () => validAt(creds, deps.clock.now()),
    onRotate: (listener) => void rotateListeners.push(listener),
    onExpire: (listener) => void expireListeners.push(listener),
    first: async () => creds,
    // The primary runs the renewal loop.
    run: async () => {},
    stats: () => ({ issued, failures: 0, lastError: undefined }),
    install(next) {
      creds = next;
      issued++;
      expiry.watch(next);
      for (const listener of rotateListeners) {
        try {
          listener(next);
        } catch (err) {
          deps.logger.error({ err: (err as Error).message }, 'installing a rotated certificate failed');
        }
      }
    },
  };
}

/**
 * A worker's WorkloadPolicy: the states the primary sends, enforced by
 * `enforcement`. Persistence and the stream's health are the primary's to
 * report; this one says what this worker enforces.
 */
export function createRelayedPolicy(config: SidecarConfig, enforcement: PolicyEnforcement, initial: PolicyState, logger: Logger): WorkloadPolicy & { apply(state: PolicyState): void } {
  let state = initial;
  const apply = (next: PolicyState): void => {
    state = next;
    if (next.kind === 'none') {
      if (next.distrustedCopy) enforcement.distrustCopy();
      return;
    }
    try {
      enforcement.install(next.snapshot);
    } catch (err) {
      // As a single sidecar's subscriber does: the chain in force stays.
      logger.error({ err: (err as Error).message, version: next.snapshot.version }, 'installing a policy snapshot failed');
    }
  };
  apply(initial);
  const onNoPolicy = config.policy?.onNoPolicy ?? 'deny';
  return {
    apply,
    inboundFilters: enforcement.inboundFilters,
    subscribe: async () => {},
    ready(): PolicyReadiness {
      const inForce = enforcement.inForce();
      if (inForce) return { ok: true, state: 'ok', detail: `policy version ${inForce.version} (${inForce.source}) from the primary` };
      if (state.kind === 'none' && state.distrustedCopy) return { ok: false, state: 'no-policy', detail: 'the persisted copy was not trusted; admitting nothing until a policy server answers' };
      return { ok: onNoPolicy === 'allow', state: 'no-policy', detail: `no policy snapshot yet; onNoPolicy: ${onNoPolicy}` };
    },
    persisted: () => undefined,
    describe: () => {
      const inForce = enforcement.inForce();
      return {
        version: inForce?.version ?? null,
        source: inForce?.source ?? null,
        receivedAt: inForce ? new Date(inForce.receivedAt).toISOString() : null,
        from: 'primary',
      };
    },
  };
}
