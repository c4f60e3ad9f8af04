import type { StaticServiceConfig } from '../config/policy-server-schema.ts';
import type { RegistryEndpoint, RegistryService } from '../policy/types.ts';

/** One sidecar's endpoint, registered while its stream is open. */
export interface RegisteredEndpoint {
  /** The stream that registered it: unique within one replica. */
  readonly streamId: string;
  readonly sidecarId: string;
  readonly spiffeId: string;
  readonly namespace: string;
  /** The workload's service (its service account). */
  readonly service: string;
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Replica the stream is open on. */
  readonly serverId: string;
}

export interface ServiceRegistry {
  register(endpoint: RegisteredEndpoint): void;
  unregister(streamId: string): void;
  /** This replica's registrations (what it publishes to the other replicas). */
  local(): readonly RegisteredEndpoint[];
  /** Replaces what the other replicas registered (from the shared folder). */
  setRemote(endpoints: readonly RegisteredEndpoint[]): void;
  /** The registry as served, in a canonical order: equal state gives equal output on every replica. */
  services(): readonly RegistryService[];
  /** Called synchronously after every change that alters services(). */
  onChange(listener: () => void): void;
}

/**
 * The service registry: static entries plus the endpoints of subscribed
 * sidecars, this replica's and (through the shared folder) the others'.
 *
 * Output is canonical so that every replica computes the same snapshot
 * versions: services sorted by namespace then name, endpoints by address;
 * an address registered twice (a sidecar that moved to another replica
 * before the first noticed its stream end) appears once, static entries
 * winning, then the smallest sidecarId. Stream ids and replica names never
 * reach the output, as they differ between replicas.
 */
export function createServiceRegistry(staticServices: readonly StaticServiceConfig[]): ServiceRegistry {
  const localById = new Map<string, RegisteredEndpoint>();
  let remote: readonly RegisteredEndpoint[] = [];
  let cache: readonly RegistryService[] | undefined;
  let cacheKey = '';
  const listeners: Array<() => void> = [];

  const compute = (): readonly RegistryService[] => {
    const byService = new Map<string, { name: string; namespace: string; identities: readonly string[]; external: boolean; endpoints: Map<string, { endpoint: RegistryEndpoint; rank: string }> }>();
    const entry = (namespace: string, name: string) => {
      const key = `${namespace}/${name}`;
      let svc = byService.get(key);
      if (!svc) {
        svc = { name, namespace, identities: [], external: false, endpoints: new Map() };
        byService.set(key, svc);
      }
      return svc;
    };
    for (const s of staticServices) {
      const svc = entry(s.namespace, s.name);
      svc.identities = [...s.identities].sort();
      svc.external = s.external;
      // '' ranks before any sidecarId: a static endpoint wins a duplicate address.
      for (const e of s.endpoints) if (!svc.endpoints.has(e.address)) svc.endpoints.set(e.address, { endpoint: { address: e.address, labels: sortedRecord(e.labels), weight: e.weight }, rank: '' });
    }
    for (const e of [...localById.values(), ...remote]) {
      const svc = entry(e.namespace, e.service);
      const current = svc.endpoints.get(e.address);
      const rank = `~${e.sidecarId}`;
      if (current && current.rank <= rank) continue;
      svc.endpoints.set(e.address, { endpoint: { address: e.address, labels: sortedRecord(e.labels), weight: 1 }, rank });
    }
    return [...byService.values()]
      .sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name))
      .map((svc) => ({
        name: svc.name,
        namespace: svc.namespace,
        endpoints: [...svc.endpoints.values()].map((v) => v.endpoint).sort((a, b) => cmp(a.address, b.address)),
        identities: svc.identities,
        external: svc.external,
      }));
  };

  const changed = (): void => {
    const next = compute();
    const key = JSON.stringify(next);
    if (key === cacheKey) return;
    cache = next;
    cacheKey = key;
    for (const listener of listeners) listener();
  };

  return {
    register(endpoint) {
      localById.set(endpoint.streamId, endpoint);
      changed();
    },
    unregister(streamId) {
      if (localById.delete(streamId)) changed();
    },
    local: () => [...localById.values()],
    setRemote(endpoints) {
      remote = endpoints;
      changed();
    },
    services() {
      if (!cache) {
        cache = compute();
        cacheKey = JSON.stringify(cache);
      }
      return cache;
    },
    onChange: (listener) => void listeners.push(listener),
  };
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function sortedRecord(record: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(record).sort()) out[key] = record[key]!;
  return out;
}
