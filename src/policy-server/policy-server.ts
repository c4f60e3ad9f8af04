import { hostname } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createAdminServer } from '../admin/admin-server.ts';
import type { PolicyServerConfig } from '../config/policy-server-schema.ts';
import type { Random } from '../core/clock.ts';
import { bindGrpc, stopGrpc } from '../core/listen.ts';
import { identityRetry } from '../identity/ca-probe.ts';
import { createCaSigner } from '../identity/ca-signer.ts';
import type { CertificateManager, WorkloadCredentials } from '../identity/cert-manager.ts';
import { createCertificateManager } from '../identity/cert-manager.ts';
import type { ServingMaterial } from '../identity/grpc-server-credentials.ts';
import { createGrpcServerCredentials } from '../identity/grpc-server-credentials.ts';
import type { WireSnapshot } from '../policy/policy-api.ts';
import { loadPolicyApi, policyServerSpiffeId } from '../policy/policy-api.ts';
import type { RoleDeps } from '../telemetry/role-deps.ts';
import { registerTracingMetrics } from '../telemetry/tracing-metrics.ts';
import { createAdminApi } from './admin-api.ts';
import { adminTlsServerOptions, createAdminAuthenticator } from './admin-auth.ts';
import type { SubscriberDirectory } from './contracts.ts';
import type { FolderDocumentStore, PolicyModel } from './document-store.ts';
import type { PolicyServerMetrics } from './policy-server-metrics.ts';
import { createPolicyServerMetrics } from './policy-server-metrics.ts';
import { createRbac } from './rbac.ts';
import { createServiceRegistry } from './service-registry.ts';
import type { SnapshotModel } from './snapshot-builder.ts';
import { createSnapshotBuilder } from './snapshot-builder.ts';
import { openPolicyStore } from './store/policy-store.ts';
import type { SnapshotWrite, SubscribeCall } from './subscription-service.ts';
import { createSubscriptionService } from './subscription-service.ts';

/** The policy model as the server uses it: parse + validate a file, digest, selector, canonical JSON. */
export type PolicyServerModel = PolicyModel & SnapshotModel;

export interface PolicyServerDeps extends RoleDeps {
  readonly random: Random;
  /** The policy model; default: src/policy's validator. */
  readonly model?: PolicyServerModel;
  /** Replica name when config.serverId is absent; default `<hostname>-<pid>`. */
  readonly defaultServerId?: string;
}

export interface RunningPolicyServer {
  readonly grpcPort: number;
  readonly adminPort: number;
  readonly serverId: string;
  /** The server's own SPIFFE ID (what sidecars must see in its certificate). */
  readonly spiffeId: string;
  readonly store: FolderDocumentStore;
  readonly directory: SubscriberDirectory;
  readonly metrics: PolicyServerMetrics;
  readonly identity: CertificateManager;
  /** Ends every stream with UNAVAILABLE (sidecars fail over at once), then stops listening. */
  close(): Promise<void>;
}

/**
 * The policy-server role. It is a mesh workload itself: it gets its serving
 * certificate from `meshgate ca` (token first, then renewal by certificate),
 * and rotates it into both listeners in place. Then it loads the policy
 * folder, starts the registry (shared with other replicas through the file
 * system) and serves PolicyDiscovery over mutual TLS, client certificates
 * required, plus the admin listener.
 *
 * Start-up problems throw (ConfigError for a bad file or folder); after
 * start, nothing a client sends can make it throw.
 */
export async function startPolicyServer(config: PolicyServerConfig, deps: PolicyServerDeps): Promise<RunningPolicyServer> {
  const { logger, clock } = deps;
  const configFile = deps.configFile ?? 'config';
  const resolvePath = (file: string): string => path.resolve(deps.configDir ?? process.cwd(), file);
  const serverId = config.serverId ?? deps.defaultServerId ?? `${hostname()}-${process.pid}`;
  const ownModel = deps.model ? undefined : await defaultModel(resolvePath(config.policies.folder));
  const model = deps.model ?? ownModel!;
  const metrics = createPolicyServerMetrics({ defaultMetrics: deps.defaultMetrics ?? false });
  const { tracing } = deps;
  registerTracingMetrics(metrics.registry, tracing);
  const spiffeId = policyServerSpiffeId(config.identity.trustDomain, config.identity.serviceAccount);
  const lifetime = new AbortController();
  const cleanups: Array<() => Promise<void> | void> = [() => lifetime.abort()];
  if (ownModel) cleanups.push(() => ownModel.close()); // its parser's worker thread, after the store (cleanups run in reverse)
  const undo = async (): Promise<void> => {
    for (const step of cleanups.reverse()) await step();
  };

  try {
    // The identity first: nothing is served without a certificate to serve it with.
    const identityConfig = {
      ...config.identity,
      ca: { ...config.identity.ca, trustBundleFile: resolvePath(config.identity.ca.trustBundleFile) },
      ...(config.identity.tokenFile ? { tokenFile: resolvePath(config.identity.tokenFile) } : {}),
    };
    const manager = createCertificateManager(
      createCaSigner(identityConfig, clock.now),
      {
        keyType: config.identity.keyType,
        ttlSeconds: Math.round(config.identity.ttl / 1000),
        renewFraction: config.identity.renewFraction,
        jitterFraction: config.identity.jitterFraction,
        expectedSpiffeId: spiffeId,
        retry: identityRetry(config.identity),
      },
      { clock, random: deps.random, logger: logger.child({ component: 'identity' }) },
    );
    void manager.run(lifetime.signal);
    logger.info({ spiffeId, ca: config.identity.ca.address }, 'waiting for the serving certificate');
    const creds = await manager.first(lifetime.signal);

    const folder = resolvePath(config.policies.folder);
    const registry = createServiceRegistry(config.registry.static);
    const policyStore = await openPolicyStore(config, registry, serverId, { logger, clock, metrics, model, configFile, resolvePath, signal: lifetime.signal });
    cleanups.push(...policyStore.cleanups);
    const store = policyStore.documents;
    const audit = policyStore.audit;
    metrics.registryEndpoints.set(registry.services().reduce((n, s) => n + s.endpoints.length, 0));

    const api = loadPolicyApi();
    const method = api.service.Subscribe as grpc.MethodDefinition<unknown, WireSnapshot>;
    const serialize = method.responseSerialize;
    // Snapshots are encoded once per workload group and the same bytes written to every stream of it.
    const service: grpc.ServiceDefinition = {
      Subscribe: { ...method, responseSerialize: (value: SnapshotWrite) => (Buffer.isBuffer(value) ? value : serialize(value)) } as grpc.MethodDefinition<unknown, SnapshotWrite>,
    };
    // A restarted server knows no endpoint until its sidecars reconnect, each after its own backoff: until
    // registry.warmup is over, snapshots say so, and subscribers keep what they had (snapshot-builder.ts).
    let warming = config.registry.warmup > 0;
    const builder = createSnapshotBuilder({ documents: () => store.documents(), services: () => registry.services(), warming: () => warming }, model, serverId, (message) => serialize(message));
    const subscriptions = createSubscriptionService(
      {
        trustDomain: config.identity.trustDomain,
        serverId,
        helloTimeoutMs: config.push.helloTimeout,
        maxSubscribers: config.push.maxSubscribers,
        debounceMs: config.push.debounce,
      },
      { builder, registry, metrics, logger, clock, tracing },
    );
    // The store already coalesced its file events (push.debounce): push at once. Registry changes debounce in the service.
    store.onChange(() => subscriptions.pushNow());
    if (warming) {
      logger.info({ warmupMs: config.registry.warmup }, 'registry warming up: subscribers keep endpoints missing from it until sidecars have had time to rejoin');
      const warmupTimer = setTimeout(() => {
        warming = false;
        logger.info({ services: registry.services().length }, 'registry warm-up over: snapshots now list the registry as complete');
        subscriptions.pushNow();
      }, config.registry.warmup);
      cleanups.push(() => clearTimeout(warmupTimer));
    }

    const material = (c: WorkloadCredentials): ServingMaterial => ({ keyPem: c.keyPem, certChainPem: c.chainPem.join(''), clientCaPem: c.trustBundlePem.join('') });
    const grpcTls = createGrpcServerCredentials(material(creds), { clientCertificates: 'required' });
    const server = new grpc.Server({
      // An Ack with its errors is small; a flood of them is not a snapshot.
      'grpc.max_receive_message_length': 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
      // Notice dead sidecars (their endpoint leaves the registry) without waiting for TCP.
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      // Clients ping every 30 s (POLICY_CLIENT_OPTIONS); allow that with room.
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    server.addService(service, { Subscribe: (call: SubscribeCall) => subscriptions.subscribe(call) });
    const grpcPort = await bindGrpc(server, config.listen.address, config.listen.port, grpcTls.credentials);
    cleanups.push(() => stopGrpc(server, 3_000));
    cleanups.push(() => subscriptions.closeAll('policy server shutting down'));

    const auth = await createAdminAuthenticator(config.adminApi, { clock, resolvePath, configFile });
    const adminApi = createAdminApi({
      store,
      directory: subscriptions,
      audit,
      auth,
      rbac: createRbac(config.adminApi),
      clock,
      maxBodyBytes: config.adminApi.maxBodyBytes,
      logger: logger.child({ component: 'admin-api' }),
    });
    const adminTls = (c: WorkloadCredentials) => ({ key: c.keyPem, cert: c.chainPem.join(''), ca: [...c.trustBundlePem] });
    const admin = createAdminServer({
      registry: metrics.registry,
      routes: adminApi,
      // The admin API takes request bodies and bearer tokens: more room than a GET-only listener.
      limits: { maxHeaderSize: 16_384, requestTimeout: 30_000, headersTimeout: 10_000 },
      ...(config.admin.tls ? { tls: adminTlsServerOptions(adminTls(creds)) } : {}),
      readiness: () => {
        const certOk = manager.valid();
        const folderOk = store.loaded();
        return {
          ready: certOk && folderOk,
          checks: {
            certificate: certOk ? 'ok' : (manager.stats().lastError ?? 'certificate expired'),
            policies: folderOk ? 'ok' : 'policy folder not loaded',
            // Degraded is still ready: the replica serves its last merged state, and an unready one would leave its sidecars nowhere to go.
            ...(config.store === 'redis' ? { store: policyStore.health() } : {}),
          },
        };
      },
      configDump: () => ({
        serverId,
        spiffeId,
        certificate: describeCertificate(manager),
        listen: { ...config.listen, port: grpcPort },
        admin: { ...config.admin, port: adminPort },
        policies: { ...config.policies, folder, documents: store.documents().length, errors: store.errors().length, stale: store.stale() },
        store: policyStore.describe(),
        registry: {
          static: config.registry.static.length,
          shared: config.store === 'folder' ? config.registry.shared : 'redis',
          services: registry.services().length,
          warmup: config.registry.warmup,
          warming,
        },
        push: config.push,
        subscribers: subscriptions.subscribers().length,
      }),
    });
    let adminPort = 0;
    adminPort = (await admin.listen(config.admin.port, config.admin.address)).port;
    cleanups.push(() => admin.close());

    manager.onRotate((next) => {
      grpcTls.update(material(next));
      if (config.admin.tls) admin.updateTls(adminTls(next));
      logger.info({ serial: next.facts.serial, notAfter: next.facts.notAfter.toISOString() }, 'serving certificate rotated');
    });
    manager.onExpire(() => logger.error({ spiffeId }, 'serving certificate expired with no successor; sidecars cannot connect until the CA is reachable'));

    logger.info(
      { grpcPort, adminPort, serverId, spiffeId, folder, documents: store.documents().length, invalid: store.errors().length, adminTls: config.admin.tls },
      'meshgate policy-server listening',
    );

    let closing: Promise<void> | undefined;
    return {
      grpcPort,
      adminPort,
      serverId,
      spiffeId,
      store,
      directory: subscriptions,
      metrics,
      identity: manager,
      close() {
        closing ??= undo();
        return closing;
      },
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

async function defaultModel(folder: string): Promise<PolicyServerModel & { close(): Promise<void> }> {
  const { policyServerModel } = await import('./policy-model.ts');
  return policyServerModel({ folder });
}

function describeCertificate(manager: CertificateManager): unknown {
  const c = manager.current();
  if (!c) return { state: 'waiting' };
  return {
    spiffeId: c.facts.spiffeId,
    serial: c.facts.serial,
    notBefore: c.facts.notBefore.toISOString(),
    notAfter: c.facts.notAfter.toISOString(),
    valid: manager.valid(),
    renewals: manager.stats().issued,
  };
}
