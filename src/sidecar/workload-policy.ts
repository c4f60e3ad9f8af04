import { hostname } from 'node:os';
import type { RouteConfig, ServiceConfig, SidecarConfig } from '../config/sidecar-schema.ts';
import { registryServiceSchema } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { respond } from '../core/verdict.ts';
import type { WorkloadCredentials } from '../identity/cert-manager.ts';
import type { InboundRuntimes } from '../inbound/inbound-chain.ts';
import { buildInboundChain } from '../inbound/inbound-chain.ts';
import type { ServiceRegistry } from '../outbound/service-registry.ts';
import type { VersionConfig } from '../outbound/versions.ts';
import type { PolicyDocument, RegistryService } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import type { PersistenceStatus } from './policy/snapshot-store.ts';
import { createPolicySnapshotStore, snapshotFileFor } from './policy/snapshot-store.ts';
import type { EffectiveSnapshot, PolicyReadiness, PolicySubscriber } from './policy/subscriber.ts';
import { createPolicySubscriber } from './policy/subscriber.ts';
import { createRegistryKeeper } from './registry-keeper.ts';

/** Kinds whose loss could turn a deny into an allow. */
const ENFORCING_KINDS = new Set(['AuthorizationPolicy', 'RequestAuthentication', 'IPAccessPolicy', 'RateLimitPolicy', 'ValidationPolicy']);

export interface WorkloadPolicy {
  /** The inbound chain of the snapshot in force (fail-closed chain before any). */
  inboundFilters(): readonly Filter[];
  /** Opens the stream once the inbound listener's address is known. */
  subscribe(inboundAddress: string, signal: AbortSignal): Promise<void>;
  ready(): PolicyReadiness;
  /** False when the policy in force would not survive a restart (meshgate_policy_snapshot_persisted). */
  persisted(): boolean;
  describe(): unknown;
}

/**
 * Keeps the sidecar's enforcement and registry on the policy in force: the disk
 * copy at boot (before any listener opens), then every snapshot the stream
 * brings. Each snapshot is compiled once into a new filter chain and swapped in
 * with one assignment, so a call runs entirely on one version.
 */
export async function startWorkloadPolicy(
  config: SidecarConfig,
  deps: {
    registry: ServiceRegistry;
    credentials: () => WorkloadCredentials | undefined;
    metrics: SidecarMetrics;
    clock: Clock;
    random: Random;
    logger: Logger;
    /** The filters' state, created once by the sidecar: every snapshot's chain is compiled against it. */
    runtimes: InboundRuntimes;
  },
): Promise<WorkloadPolicy> {
  const policyConfig = config.policy!;
  const logger = deps.logger.child({ component: 'policy' });
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

  // The registry part of a snapshot; run again when a hold ends, with the same snapshot.
  const applyRegistry = (snapshot: EffectiveSnapshot): void => {
    clearTimeout(recheck);
    const kept = keeper.resolve(snapshot.services, snapshot.registryWarming === true);
    const merged = mergeServices(kept.services, snapshot.documents, config, logger);
    deps.registry.update(merged.services, merged.versions);
    if (kept.recheckInMs !== undefined) {
      recheck = setTimeout(() => {
        if (inForce) applyRegistry(inForce);
      }, kept.recheckInMs + 1);
      recheck.unref();
    }
  };

  const install = (snapshot: EffectiveSnapshot): void => {
    // The subscriber's boot hands over the disk copy this sidecar already installed before its listeners opened.
    if (snapshot.source === 'disk' && inForce?.source === 'disk' && inForce.version === snapshot.version && inForce.receivedAt === snapshot.receivedAt) return;
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

  const store = createPolicySnapshotStore({
    file: snapshotFileFor(policyConfig.stateDir, config.workload),
    logger,
    now: () => deps.clock.now(),
    onWrite: (ok) => {
      if (!ok) deps.metrics.policyPersistFailures.inc();
    },
  });
  let subscriber: PolicySubscriber | undefined;
  const booted = await store.load();
  const refusedCopy = store.persistence().refusedAtBoot;
  // A copy that may be older than the policy last in force is not enforced, whatever onNoPolicy says: it is not "no policy".
  if (!booted && refusedCopy) filters = [refusedCopyFilter];
  if (booted) {
    install({
      version: booted.version,
      receivedAt: booted.receivedAt,
      source: 'disk',
      documents: booted.documents.map((d) => d.document),
      services: booted.services,
      refused: booted.refused,
    });
  }

  return {
    inboundFilters: () => filters,
    async subscribe(inboundAddress, signal) {
      subscriber = createPolicySubscriber(policyConfig, {
        credentials: deps.credentials,
        hello: {
          sidecarId: `${hostname()}-${process.pid}-${Math.round(deps.clock.now())}`,
          address: config.workload.address ?? inboundAddress,
          labels: config.workload.labels,
        },
        store,
        clock: deps.clock,
        random: deps.random,
        logger,
      });
      subscriber.onSnapshot(install);
      signal.addEventListener('abort', () => store.close(), { once: true });
      signal.addEventListener('abort', () => clearTimeout(recheck), { once: true });
      await subscriber.boot();
      void subscriber.run(signal);
    },
    ready: () => {
      const base =
        subscriber?.ready() ??
        (inForce
          ? { ok: true, state: 'ok' as const, detail: `disk copy ${inForce.version}` }
          : { ok: policyConfig.onNoPolicy === 'allow', state: 'no-policy' as const, detail: 'no policy snapshot yet' });
      return withPersistence(base, inForce !== undefined, store.persistence());
    },
    persisted: () => {
      const p = store.persistence();
      return p.state === 'ok' && (inForce !== undefined || p.refusedAtBoot === undefined);
    },
    describe: () => {
      const p = store.persistence();
      return {
        version: inForce?.version ?? null,
        source: inForce?.source ?? null,
        receivedAt: inForce ? new Date(inForce.receivedAt).toISOString() : null,
        status: subscriber?.current() ?? null,
        stats: subscriber?.stats() ?? null,
        servers: policyConfig.servers,
        persistence: { ...p, persisted: p.state === 'ok', failingSince: p.failingSince === undefined ? null : new Date(p.failingSince).toISOString() },
      };
    },
  };
}

/** Admits nothing while the only policy at hand is a persisted copy that may be older than the one last in force. */
const refusedCopyFilter: Filter = {
  name: 'untrusted-policy-copy',
  onRequest: () => respond('policy.unavailable', 'the persisted policy snapshot may be outdated; admitting nothing until a policy server answers'),
};

/**
 * /ready's policy check with persistence folded in. A snapshot that could not
 * be persisted is `degraded` but still ready (200): the sidecar enforces it
 * correctly, and taking the workload out of service would turn a disk problem
 * into an outage; the alert is meshgate_policy_snapshot_persisted == 0. A
 * refused boot copy with nothing else in force admits nothing: not ready.
 */
function withPersistence(base: PolicyReadiness, inForce: boolean, p: PersistenceStatus): PolicyReadiness {
  if (!inForce && p.refusedAtBoot) {
    const version = p.refusedAtBoot.version ? ` (version ${p.refusedAtBoot.version})` : '';
    return { ok: false, state: 'no-policy', detail: `persisted copy${version} not trusted: ${p.refusedAtBoot.reason}; admitting nothing until a policy server answers` };
  }
  if (!inForce || p.state === 'ok') return base;
  const since = p.failingSince === undefined ? '' : ` since ${new Date(p.failingSince).toISOString()}`;
  const onRestart = {
    current: 'the copy on disk holds the same documents',
    'outdated-set-aside': `the older copy${p.persistedVersion ? ` (version ${p.persistedVersion})` : ''} was set aside: a restart without a policy server admits nothing`,
    outdated: `the older copy${p.persistedVersion ? ` (version ${p.persistedVersion})` : ''} is still on disk: a restart without a policy server refuses it only while stateDir takes no write`,
    none: 'there is no copy on disk: a restart without a policy server has no policy',
  }[p.diskCopy];
  return {
    ok: base.ok,
    state: base.state === 'no-policy' ? base.state : 'degraded',
    detail: `${base.detail}; not persisted: cannot write ${p.file}${since} (${p.lastError ?? 'unknown error'}), retrying; ${onRestart}`,
  };
}

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
    if (doc.kind !== 'Route') continue;
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
