import type { ServiceConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { UpstreamTls } from '../proxy/upstream-pool.ts';
import { createCluster } from './cluster.ts';
import type { Cluster, ClusterEvents } from './cluster.ts';
import { compileRoute, defaultRoute } from './router.ts';
import type { CompiledRoute } from './router.ts';

export interface RegisteredService {
  readonly cluster: Cluster;
  readonly routes: readonly CompiledRoute[];
}

/** Services the local app may call, keyed `name.namespace`, routes compiled once. */
export interface ServiceRegistry {
  lookup(name: string, namespace: string): RegisteredService | undefined;
  cluster(name: string, namespace: string): Cluster | undefined;
  services(): readonly RegisteredService[];
  refreshConnections(): void;
  start(signal: AbortSignal): void;
  close(): Promise<void>;
}

export function createServiceRegistry(
  configs: readonly ServiceConfig[],
  deps: {
    clock: Clock;
    random: Random;
    events?: ClusterEvents;
    idleTimeoutMs: number;
    /** mTLS settings for a service, or undefined when it is reached in plaintext. */
    tlsFor?: (service: ServiceConfig) => UpstreamTls | undefined;
  },
): ServiceRegistry {
  const byKey = new Map<string, RegisteredService>();
  for (const config of configs) {
    // Duplicates and unknown backends were refused when the config was validated.
    const key = `${config.name}.${config.namespace}`;
    const owner = { name: config.name, namespace: config.namespace };
    const routes = config.routes.length > 0 ? config.routes.map((r, i) => compileRoute(r, i, owner)) : [compileRoute(defaultRoute(owner), 0, owner)];
    byKey.set(key, { cluster: createCluster(config, { ...deps, tls: deps.tlsFor?.(config) }), routes });
  }
  return {
    lookup: (name, namespace) => byKey.get(`${name}.${namespace}`),
    cluster: (name, namespace) => byKey.get(`${name}.${namespace}`)?.cluster,
    services: () => [...byKey.values()],
    refreshConnections() {
      for (const service of byKey.values()) service.cluster.refreshConnections();
    },
    start(signal) {
      for (const service of byKey.values()) service.cluster.start(signal);
    },
    async close() {
      await Promise.all([...byKey.values()].map((s) => s.cluster.close()));
    },
  };
}
