import path from 'node:path';
import { deepFreeze } from './load.ts';
import type { SidecarConfig } from './sidecar-schema.ts';

/**
 * The sidecar config with its relative paths resolved against `dir`, the
 * config file's folder: the rule of every role (the CA and the policy server
 * resolve theirs the same way), so a config means the same wherever the
 * process is started from. Absolute paths are left as they are.
 */
export function resolveSidecarPaths(config: SidecarConfig, dir: string): SidecarConfig {
  const at = (file: string): string => path.resolve(dir, file);
  const { identity, listeners, policy, rateLimit, userFilters } = config;
  return deepFreeze({
    ...config,
    listeners: listeners.edge ? { ...listeners, edge: { ...listeners.edge, certFile: at(listeners.edge.certFile), keyFile: at(listeners.edge.keyFile) } } : listeners,
    identity: identity && {
      ...identity,
      ca: { ...identity.ca, trustBundleFile: at(identity.ca.trustBundleFile) },
      ...(identity.tokenFile === undefined ? {} : { tokenFile: at(identity.tokenFile) }),
    },
    policy: policy && { ...policy, stateDir: at(policy.stateDir) },
    userFilters: userFilters.secretsDir === undefined ? userFilters : { ...userFilters, secretsDir: at(userFilters.secretsDir) },
    rateLimit:
      rateLimit.redis === undefined
        ? rateLimit
        : {
            ...rateLimit,
            redis: {
              ...rateLimit.redis,
              ...(rateLimit.redis.passwordFile === undefined ? {} : { passwordFile: at(rateLimit.redis.passwordFile) }),
              ...(rateLimit.redis.caFile === undefined ? {} : { caFile: at(rateLimit.redis.caFile) }),
            },
          },
  });
}
