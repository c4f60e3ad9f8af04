import type { Clock } from '../core/clock.ts';
import type { RegistryEndpoint, RegistryService } from '../policy/types.ts';

export interface RegistryKeeperOptions {
  /** How long a service keeps endpoints that worked after an update dropped them all; 0: never. */
  readonly holdMs: number;
  readonly clock: Clock;
  /** True when one of the service's endpoints answered a call (below 500) within the last `holdMs`. */
  working(name: string, namespace: string): boolean;
  readonly events?: {
    held?(service: string, endpoints: readonly string[], forMs: number): void;
    released?(service: string, why: 'endpoints listed again' | 'hold expired'): void;
  };
}

interface KeptRegistry {
  readonly services: readonly RegistryService[];
  /** `name.namespace` of services served on held endpoints. */
  readonly held: readonly string[];
  /** When the earliest hold ends: resolve() again then, with the same push, to let it go. */
  readonly recheckInMs: number | undefined;
}

export interface RegistryKeeper {
  /** The registry to serve for a pushed one; `warming` when the server said its registry is warming up. */
  resolve(pushed: readonly RegistryService[], warming: boolean): KeptRegistry;
}

const keyOf = (s: { name: string; namespace: string }): string => `${s.name}.${s.namespace}`;

/**
 * What the sidecar serves from the registry pushes it receives. The policy
 * server knows an endpoint only while its sidecar's stream is open, so a
 * restarted server, or a sidecar that reconnects a little late, briefly
 * pushes a registry without services that are up. Three rules keep callers
 * from losing a route to them:
 *
 * 1. Warm-up: while the server says its registry is warming up, the pushed
 *    endpoints are added to the ones served, never replace them.
 * 2. Hold: when an update leaves a service with no endpoint, the endpoints it
 *    had keep serving for `holdMs` if one of them answered a call within the
 *    last `holdMs`, or until an update lists endpoints again. Mutual TLS
 *    still checks every connection, so a reused address cannot impersonate.
 * 3. Known: a service the registry listed once stays known with no endpoint,
 *    so a call gets 503 upstream.no_endpoint, not 404 route.not_found
 *    ("no such service"), until the sidecar restarts.
 */
export function createRegistryKeeper(opts: RegistryKeeperOptions): RegistryKeeper {
  let served = new Map<string, RegistryService>();
  /** Monotonic ms at which each hold ends. */
  const holds = new Map<string, number>();

  return {
    resolve(pushed, warming) {
      const now = opts.clock.monotonic();
      const listed = new Map(pushed.map((s) => [keyOf(s), s]));
      const next = new Map(listed);
      if (warming) {
        for (const [key, had] of served) {
          const update = listed.get(key);
          next.set(key, update ? { ...update, endpoints: unionEndpoints(update.endpoints, had.endpoints) } : had);
        }
      }
      for (const [key, had] of served) {
        const update = next.get(key);
        if (update && update.endpoints.length > 0) {
          // During a warm-up the union keeps them: only a push that lists endpoints ends a hold out loud.
          if (holds.delete(key) && (listed.get(key)?.endpoints.length ?? 0) > 0) opts.events?.released?.(key, 'endpoints listed again');
          continue;
        }
        // The update leaves this service without an endpoint.
        if (had.endpoints.length > 0) {
          let until = holds.get(key);
          if (until === undefined && opts.holdMs > 0 && opts.working(had.name, had.namespace)) {
            until = now + opts.holdMs;
            holds.set(key, until);
            opts.events?.held?.(
              key,
              had.endpoints.map((e) => e.address),
              opts.holdMs,
            );
          }
          if (until !== undefined && now < until) {
            next.set(key, { ...(update ?? had), endpoints: had.endpoints });
            continue;
          }
        }
        if (holds.delete(key)) opts.events?.released?.(key, 'hold expired');
        if (!update) next.set(key, { ...had, endpoints: [] });
      }
      served = next;
      let earliest: number | undefined;
      for (const until of holds.values()) earliest = earliest === undefined ? until : Math.min(earliest, until);
      return {
        services: [...next.values()],
        held: [...holds.keys()],
        recheckInMs: earliest === undefined ? undefined : Math.max(0, earliest - now),
      };
    },
  };
}

/** The pushed endpoints, then those only `had` lists (a pushed address wins: its labels and weight are current). */
function unionEndpoints(pushed: readonly RegistryEndpoint[], had: readonly RegistryEndpoint[]): RegistryEndpoint[] {
  const addresses = new Set(pushed.map((e) => e.address));
  return [...pushed, ...had.filter((e) => !addresses.has(e.address))];
}
