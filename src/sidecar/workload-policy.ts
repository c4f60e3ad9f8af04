import { hostname } from 'node:os';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import type { WorkloadCredentials } from '../identity/cert-manager.ts';
import type { InboundRuntimes } from '../inbound/inbound-chain.ts';
import type { ServiceRegistry } from '../outbound/service-registry.ts';
import type { JsonSchemaCompiler } from '../policy/json-schema.ts';
import type { FilterDocument } from '../policy/kinds/filter.ts';
import { createPolicyValidator } from '../policy/validate.ts';
import type { SandboxLoader } from '../sandbox/quickjs-sandbox.ts';
import { createSandboxLoader } from '../sandbox/quickjs-sandbox.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import { createFilterSourceChecks } from './policy/filter-source-checks.ts';
import type { PersistenceStatus } from './policy/snapshot-store.ts';
import { createPolicySnapshotStore, snapshotFileFor } from './policy/snapshot-store.ts';
import type { EffectiveSnapshot, PolicyReadiness, PolicySubscriber } from './policy/subscriber.ts';
import { createPolicySubscriber } from './policy/subscriber.ts';
import { policyModelValidator } from './policy/subscriber-validate.ts';
import type { PolicyEnforcer } from './policy-enforcement.ts';
import { createPolicyEnforcement } from './policy-enforcement.ts';

export interface WorkloadPolicy {
  /** The inbound chain of the snapshot in force (fail-closed chain before any). */
  inboundFilters(): readonly Filter[];
  /** Opens the stream once the inbound listener's address is known. */
  subscribe(inboundAddress: string, signal: AbortSignal): Promise<void>;
  ready(): PolicyReadiness;
  /** False when the policy in force would not survive a restart (meshgate_policy_snapshot_persisted); undefined: not this process's concern. */
  persisted(): boolean | undefined;
  describe(): unknown;
}

/** The policy of a process that gets its snapshots from the policy server itself: all of WorkloadPolicy but the chain. */
export type PolicySource = Omit<WorkloadPolicy, 'inboundFilters'>;

interface SourceDeps {
  credentials: () => WorkloadCredentials | undefined;
  metrics: SidecarMetrics;
  clock: Clock;
  random: Random;
  logger: Logger;
}

/**
 * The sidecar's policy, in one process: snapshots from this process's
 * subscriber (policy-source below) compiled and enforced here (policy-enforcement.ts).
 */
export async function startWorkloadPolicy(
  config: SidecarConfig,
  deps: SourceDeps & {
    registry: ServiceRegistry;
    /** The filters' state, created once by the sidecar: every snapshot's chain is compiled against it. */
    runtimes: InboundRuntimes;
    signal: AbortSignal;
  },
): Promise<WorkloadPolicy> {
  const enforcement = createPolicyEnforcement(config, { ...deps, logger: deps.logger.child({ component: 'policy' }) });
  const filters = deps.runtimes.userFilters;
  // One process: the source check compiles each program where the chain will run it,
  // and the validator compiles each JSON Schema with the compiler the validate filter then finds it in.
  const source = await startPolicySource(config, {
    ...deps,
    enforcer: enforcement,
    sandbox: filters.sandbox,
    compileFilter: (doc) => filters.check(doc),
    jsonSchemaCompiler: deps.runtimes.validate.schemaCompiler,
  });
  return { ...source, inboundFilters: enforcement.inboundFilters };
}

/**
 * Where the policy in force comes from: the disk copy at boot (installed
 * before any listener opens), then every snapshot the stream brings, each
 * handed to `enforcer`. A sidecar with several workers runs this in its
 * primary only, whose enforcer hands each snapshot to every worker.
 */
export async function startPolicySource(
  config: SidecarConfig,
  deps: SourceDeps & { enforcer: PolicyEnforcer; sandbox?: SandboxLoader; compileFilter?: (doc: FilterDocument) => Promise<string | undefined>; jsonSchemaCompiler?: JsonSchemaCompiler },
): Promise<PolicySource> {
  const policyConfig = config.policy!;
  const logger = deps.logger.child({ component: 'policy' });
  let inForce: EffectiveSnapshot | undefined;

  const install = (snapshot: EffectiveSnapshot): void | Promise<void> => {
    // The subscriber's boot hands over the disk copy this sidecar already installed before its listeners opened.
    if (snapshot.source === 'disk' && inForce?.source === 'disk' && inForce.version === snapshot.version && inForce.receivedAt === snapshot.receivedAt) return;
    inForce = snapshot;
    // With checks of your own to compile first, the promise settles once the snapshot is in force.
    return deps.enforcer.install(snapshot);
  };

  // Filter sources are compiled in the sandbox before a snapshot applies, so one that does not compile is NACKed.
  const base = policyModelValidator(createPolicyValidator(deps.jsonSchemaCompiler ? { jsonSchemaCompiler: deps.jsonSchemaCompiler } : {}));
  const filterSources = createFilterSourceChecks(deps.sandbox ?? createSandboxLoader(), base, deps.compileFilter);
  const store = createPolicySnapshotStore({
    file: snapshotFileFor(policyConfig.stateDir, config.workload),
    validate: filterSources.validator(base),
    prepare: filterSources.prepare,
    logger,
    now: () => deps.clock.now(),
    onWrite: (ok) => {
      if (!ok) deps.metrics.policyPersistFailures.inc();
    },
  });
  let subscriber: PolicySubscriber | undefined;
  const booted = await store.load();
  if (!booted && store.persistence().refusedAtBoot) deps.enforcer.distrustCopy();
  if (booted) {
    // Awaited: the disk copy is in force before any listener opens, checks of your own compiled.
    await install({
      version: booted.version,
      receivedAt: booted.receivedAt,
      source: 'disk',
      documents: booted.documents.map((d) => d.document),
      services: booted.services,
      refused: booted.refused,
    });
  }

  return {
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
