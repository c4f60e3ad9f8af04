import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { createAuthnRuntime } from '../filters/authn/authn-runtime.ts';
import { createAuthzRuntime } from '../filters/authz/authz-filter.ts';
import type { IPAccessRuntime } from '../filters/ip-access/ip-access-filter.ts';
import type { RateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import { createResponseRuntime } from '../filters/response/response-plan.ts';
import { createSecretFiles } from '../filters/user-filter/secret-files.ts';
import { createUserFilterRuntime } from '../filters/user-filter/user-filter.ts';
import { createValidateRuntime } from '../filters/validate/validate-filter.ts';
import type { InboundRuntimes } from '../inbound/inbound-chain.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';

/**
 * The sidecar's inbound filter runtimes, created once at start: every policy
 * snapshot's chain is compiled against them, so key sets, buckets, bans and
 * counters survive a new snapshot. The ban list and the rate-limit runtime are
 * made earlier (the admin API and the metrics read them) and passed in.
 */
export function createSidecarFilterRuntimes(
  config: SidecarConfig,
  deps: { clock: Clock; random: Random; logger: Logger; metrics: SidecarMetrics; ipAccess: IPAccessRuntime; rateLimit: RateLimitRuntime },
): InboundRuntimes {
  const { clock, random, logger, metrics } = deps;
  const userFilterLog = logger.child({ component: 'user-filter' });
  const secretsDir = config.userFilters.secretsDir;
  return {
    ipAccess: deps.ipAccess,
    // Key sets and introspection answers outlive snapshots; shadow denials count in authz's metric.
    authn: createAuthnRuntime({ clock, random, logger, onShadowDenial: (policy, rule) => metrics.shadowDenials.inc({ policy, rule }) }),
    authz: createAuthzRuntime({ clock, random, allowWhenNoPolicy: config.authorization.allowWhenNoPolicy, metrics, logger: logger.child({ component: 'authz' }) }),
    rateLimit: deps.rateLimit,
    validate: createValidateRuntime({ clock, random, maxBodyBuffer: config.limits.maxBodyBuffer, metrics, logger: logger.child({ component: 'validate' }) }),
    // The response cache outlives snapshots too; its entries are this workload's app's answers.
    response: createResponseRuntime({
      clock,
      random,
      workload: config.workload,
      maxCacheBytes: config.limits.maxResponseCache,
      events: {
        lookup: (rule, result, reason) => metrics.responseCacheLookups.inc({ rule, result, reason }),
        store: (rule, result, reason) => metrics.responseCacheStores.inc({ rule, result, reason }),
        evicted: () => metrics.responseCacheEvictions.inc(),
        resized: (bytes) => metrics.responseCacheBytes.set(bytes),
      },
    }),
    userFilters: createUserFilterRuntime({
      clock,
      random,
      metrics,
      logger: userFilterLog,
      ...(secretsDir !== undefined
        ? { secrets: createSecretFiles({ dir: secretsDir, clock, onError: (name, problem) => userFilterLog.warn({ secret: name, problem }, 'a secret for checks of your own cannot be read') }) }
        : {}),
    }),
  };
}
