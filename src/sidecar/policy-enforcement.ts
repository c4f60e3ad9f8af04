import type { RouteConfig, ServiceConfig, SidecarConfig } from '../config/sidecar-schema.ts';
import { registryServiceSchema } from '../config/sidecar-schema.ts';
import type { Clock } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { respond } from '../core/verdict.ts';
import type { InboundRuntimes } from '../inbound/inbound-chain.ts';
import { buildInboundChain } from '../inbound/inbound-chain.ts';
import type { ServiceRegistry } from '../outbound/service-registry.ts';
import type { VersionConfig } from '../outbound/versions.ts';
import { selectorApplies } from '../policy/selector.ts';
import type { PolicyDocument, RegistryService } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import type { EffectiveSnapshot } from './policy/subscriber.ts';
import { createRegistryKeeper } from './registry-keeper.ts';

/** Kinds whose loss could turn a deny into an allow. */
const ENFORCING_KINDS = new Set(['AuthorizationPolicy', 'RequestAuthentication', 'IPAccessPolicy', 'RateLimitPolicy', 'ValidationPolicy', 'Filter']);

/** What the policy source (workload-policy.ts) tells the process that serves calls. */
export interface PolicyEnforcer {
  /**
   * A snapshot is in force from now on; or, when it has checks of your own
   * still to compile, once they are (the promise), unless a later snapshot
   * was installed meanwhile. Calls keep the snapshot in force until then.
   */
  install(snapshot: EffectiveSnapshot): void | Promise<void>;
  /** The persisted copy found at boot was not trusted and nothing else is in force: admit nothing. */
  distrustCopy(): void;
}

export interface PolicyEnforcement extends PolicyEnforcer {
  /** The inbound chain of the snapshot in force (the onNoPolicy chain before any). */
  inboundFilters(): readonly Filter[];
  inForce(): EffectiveSnapshot | undefined;
}

/**
 * The part of the policy that serves calls, in every process that serves
 * them: each snapshot is compiled once into a new filter chain and swapped in
 * with one assignment, so a call runs entirely on one version; the registry
 * part updates the outbound registry. Where snapshots come from is not its
 * concern (this process's subscriber, or a primary's over IPC).
 */
export function createPolicyEnforcement(
  config: SidecarConfig,
  deps: {
    registry: ServiceRegistry;
    metrics: SidecarMetrics;
    clock: Clock;
    logger: Logger;
    /** The filters' state, created once by the sidecar: every snapshot's chain is compiled against it. */
    runtimes: InboundRuntimes;
    signal: AbortSignal;
  },
): PolicyEnforcement {
  const policyConfig = config.policy!;
  const { logger } = deps;
  const chainOptions = { onNoPolicy: policyConfig.onNoPolicy, runtimes: deps.runtimes };
  let filters = buildInboundChain(undefined, chainOptions);
  let inForce: EffectiveSnapshot | undefined;
  const holdMs = policyConfig.holdEndpoints;
  const keeper = createRegistryKeeper({
    holdMs,
    clock: deps.clock,
    working: (name, namespace) => {
      const since = deps.clock.monotonic() - holdMs;
      return (
        deps.registry
          .cluster(name, namespace)
          ?.endpoints()
          .some((ep) => ep.lastSuccessAt > 0 && ep.lastSuccessAt >= since) ?? false
      );
    },
    events: {
      held: (service, endpoints, forMs) =>
        logger.warn({ service, endpoints, holdMs: forMs }, 'registry update left a service with no endpoint; keeping its endpoints that answered recently (policy.holdEndpoints)'),
      released: (service, why) => logger.info({ service, why }, 'held endpoints released'),
    },
  });
  let recheck: NodeJS.Timeout | undefined;
  deps.signal.addEventListener('abort', () => clearTimeout(recheck), { once: true });

  // The registry part of a snapshot; run again when a hold ends, with the same snapshot.
  const applyRegistry = (snapshot: EffectiveSnapshot): void => {
    clearTimeout(recheck);
    const kept = keeper.resolve(snapshot.services, snapshot.registryWarming === true);
    const merged = mergeServices(kept.services, snapshot.documents, config, logger);
    deps.registry.update(merged.services, merged.versions);
    if (kept.recheckInMs !== undefined && !deps.signal.aborted) {
      recheck = setTimeout(() => {
        if (inForce) applyRegistry(inForce);
      }, kept.recheckInMs + 1);
      recheck.unref();
    }
  };

  let installs = 0;
  const installNow = (snapshot: EffectiveSnapshot): void => {
    const missing = snapshot.refused.filter((r) => !r.kept && ENFORCING_KINDS.has(r.key.split('/')[0]!)).map((r) => r.key);
    if (missing.length > 0) logger.error({ version: snapshot.version, documents: missing }, 'policy documents could not be applied and have no earlier copy: admitting nothing');
    filters = buildInboundChain(snapshot.documents, chainOptions, missing);
    inForce = snapshot;
    applyRegistry(snapshot);
    deps.metrics.policyVersion.reset();
    deps.metrics.policyVersion.set({ version: snapshot.version, source: snapshot.source }, 1);
    logger.info(
      { version: snapshot.version, source: snapshot.source, documents: snapshot.documents.length, services: snapshot.services.length, registryWarming: snapshot.registryWarming === true },
      'policy in force',
    );
  };

  return {
    install(snapshot) {
      const seq = ++installs;
      const compiling = deps.runtimes.userFilters.prepare(snapshot.documents);
      if (!compiling) return installNow(snapshot);
      return compiling
        .then(() => {
          // A later snapshot was installed while these compiled: it is the one in force.
          if (seq === installs && !deps.signal.aborted) installNow(snapshot);
        })
        .catch((err: unknown) => logger.error({ err: (err as Error).message, version: snapshot.version }, 'installing a policy snapshot failed'));
    },
    distrustCopy() {
      // A copy that may be older than the policy last in force is not enforced, whatever onNoPolicy says: it is not "no policy".
      if (!inForce) filters = [refusedCopyFilter];
    },
    inboundFilters: () => filters,
    inForce: () => inForce,
  };
}

/** Admits nothing while the only policy at hand is a persisted copy that may be older than the one last in force. */
const refusedCopyFilter: Filter = {
  name: 'untrusted-policy-copy',
  onRequest: () => respond('policy.unavailable', 'the persisted policy snapshot may be outdated; admitting nothing until a policy server answers'),
};

/**
 * The registry the outbound stack uses: services pushed by the policy server
 * (as the registry keeper serves them), routes from Route documents, services
 * known without endpoints (Route destinations, policy.destinations), and the
 * static `services:` of the config file on top (an operator's override wins).
 * A Route's versions apply to its destination wherever the endpoints come
 * from: they only name label subsets, and a static entry has no versions of
 * its own to override them with.
 */
function mergeServices(
  pushed: readonly RegistryService[],
  documents: readonly PolicyDocument[],
  config: SidecarConfig,
  logger: Logger,
): { services: ServiceConfig[]; versions: Map<string, VersionConfig[]> } {
  const routes = new Map<string, RouteConfig[]>();
  const versions = new Map<string, VersionConfig[]>();
  for (const doc of documents) {
    // A Route whose selector does not pick this workload came only for its responses (this is its destination).
    if (doc.kind !== 'Route' || !selectorApplies(doc, config.workload)) continue;
    const ref = String(doc.spec.service);
    const key = ref.includes('.') ? ref : `${ref}.${doc.metadata.namespace}`;
    routes.set(key, doc.spec.routes as RouteConfig[]); // PolicyRoute fits RouteConfig (test/unit/policy/kinds.test.ts checks it at compile time)
    // The same document as the routes (the last one wins for both), validated by the Route schema.
    versions.set(key, (doc.spec.versions as VersionConfig[] | undefined) ?? []);
  }
  const byKey = new Map<string, ServiceConfig>();
  for (const svc of pushed) {
    const key = `${svc.name}.${svc.namespace}`;
    const parsed = registryServiceSchema.safeParse({
      name: svc.name,
      namespace: svc.namespace,
      endpoints: svc.endpoints.map((e) => ({ address: e.address, labels: e.labels, weight: e.weight || 1 })),
      ...(svc.identities.length > 0 ? { identities: svc.identities } : {}),
      tls: svc.external ? 'none' : 'auto',
    });
    // Routes join after parsing: the Route schema already validated and defaulted them, with durations
    // as milliseconds, which the config file's duration syntax ("15s") would refuse, dropping the service.
    if (parsed.success) byKey.set(key, { ...parsed.data, routes: routes.get(key) ?? [] });
    else logger.warn({ service: key, error: parsed.error.issues[0]?.message }, 'registry entry ignored');
  }
  // Known without a registry entry: the destination of a Route in force, or a service the config says the
  // workload calls. With no endpoint, a call to one gets 503 upstream.no_endpoint, not 404 "no such service".
  for (const key of [...routes.keys(), ...(config.policy?.destinations ?? [])]) {
    if (byKey.has(key)) continue;
    const dot = key.indexOf('.');
    const parsed = registryServiceSchema.safeParse({ name: key.slice(0, dot), namespace: key.slice(dot + 1), endpoints: [] });
    if (parsed.success) byKey.set(key, { ...parsed.data, routes: routes.get(key) ?? [] });
  }
  for (const svc of config.services) byKey.set(`${svc.name}.${svc.namespace}`, svc);
  return { services: [...byKey.values()], versions };
}
