import type { ServiceConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { UpstreamTls } from '../proxy/upstream-pool.ts';
import type { Cluster, ClusterEvents } from './cluster.ts';
import { createCluster } from './cluster.ts';
import type { CompiledRoute } from './router.ts';
import { compileRoute, defaultRoute } from './router.ts';
import type { VersionConfig, VersionTable } from './versions.ts';
import { compileVersions } from './versions.ts';

export interface RegisteredService {
  readonly cluster: Cluster;
  readonly routes: readonly CompiledRoute[];
  /** Named versions from the callers' Route document; undefined when it declares none. */
  readonly versions: VersionTable | undefined;
}

/** Services the local app may call, keyed `name.namespace`, routes compiled once per update. */
export interface ServiceRegistry {
  lookup(name: string, namespace: string): RegisteredService | undefined;
  cluster(name: string, namespace: string): Cluster | undefined;
  services(): readonly RegisteredService[];
  /**
   * Replaces the whole service set (a registry push merged with the static
   * config). A service whose settings are unchanged only gets its endpoints
   * updated, keeping connections, outlier state and balancer position.
   * `versions` (keyed `name.namespace`) are compiled here, once per update;
   * they only name label subsets, so a change never rebuilds a cluster.
   */
  update(configs: readonly ServiceConfig[], versions?: ReadonlyMap<string, readonly VersionConfig[]>): void;
  refreshConnections(): void;
  start(signal: AbortSignal): void;
  /** Waits for calls in flight; `force` ends them (see Cluster.close). */
  close(opts?: { readonly force?: boolean }): Promise<void>;
}

interface Entry extends RegisteredService {
  /** The config without endpoints, to tell an endpoint change from a settings change. */
  readonly settings: string;
  readonly cluster: Cluster;
  readonly routes: readonly CompiledRoute[];
}

function settingsOf(config: ServiceConfig): string {
  return JSON.stringify({ ...config, endpoints: undefined });
}

function compileRoutes(config: ServiceConfig): CompiledRoute[] {
  const owner = { name: config.name, namespace: config.namespace };
  return config.routes.length > 0 ? config.routes.map((r, i) => compileRoute(r, i, owner)) : [compileRoute(defaultRoute(owner), 0, owner)];
}

export function createServiceRegistry(
  configs: readonly ServiceConfig[],
  deps: {
    clock: Clock;
    random: Random;
    events?: ClusterEvents;
    idleTimeoutMs: number;
    /** The sidecar's one buffer upstream sockets read into (src/proxy/socket-reads.ts). */
    readBuffer: Buffer;
    /** mTLS settings for a service, or undefined when it is reached in plaintext. */
    tlsFor?: (service: ServiceConfig) => UpstreamTls | undefined;
  },
): ServiceRegistry {
  let byKey = new Map<string, Entry>();
  let signal: AbortSignal | undefined;
  // Health checks of a replaced cluster stop with it.
  const lifetimes = new Map<Cluster, AbortController>();

  const build = (config: ServiceConfig): Entry => {
    const cluster = createCluster(config, { ...deps, tls: deps.tlsFor?.(config) });
    if (signal) startCluster(cluster);
    return { cluster, routes: compileRoutes(config), settings: settingsOf(config), versions: undefined };
  };
  const startCluster = (cluster: Cluster): void => {
    const own = new AbortController();
    lifetimes.set(cluster, own);
    cluster.start(AbortSignal.any([signal!, own.signal]));
  };
  const retire = (cluster: Cluster): void => {
    lifetimes.get(cluster)?.abort();
    lifetimes.delete(cluster);
    void cluster.close().catch(() => {});
  };

  for (const config of configs) byKey.set(`${config.name}.${config.namespace}`, build(config));

  return {
    lookup: (name, namespace) => byKey.get(`${name}.${namespace}`),
    cluster: (name, namespace) => byKey.get(`${name}.${namespace}`)?.cluster,
    services: () => [...byKey.values()],
    update(next, versions) {
      const updated = new Map<string, Entry>();
      for (const config of next) {
        const key = `${config.name}.${config.namespace}`;
        const current = byKey.get(key);
        const declared = versions?.get(key);
        const table = declared && declared.length > 0 ? compileVersions(declared) : undefined;
        if (current && current.settings === settingsOf(config)) {
          current.cluster.setEndpoints(config.endpoints);
          // A new entry, not a mutation: a call in flight keeps the versions it started with.
          updated.set(key, { ...current, versions: table });
        } else {
          updated.set(key, { ...build(config), versions: table });
          if (current) retire(current.cluster);
        }
      }
      for (const [key, entry] of byKey) if (!updated.has(key)) retire(entry.cluster);
      // One assignment: a call sees either the old set or the new one, never a mix.
      byKey = updated;
    },
    refreshConnections() {
      for (const service of byKey.values()) service.cluster.refreshConnections();
    },
    start(s) {
      signal = s;
      for (const service of byKey.values()) startCluster(service.cluster);
    },
    async close(opts) {
      for (const controller of lifetimes.values()) controller.abort();
      await Promise.all([...byKey.values()].map((s) => s.cluster.close(opts)));
    },
  };
}
