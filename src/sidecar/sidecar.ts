import type { AddressInfo } from 'node:net';
import type { AdminDeps } from '../admin/admin-server.ts';
import { createAdminServer } from '../admin/admin-server.ts';
import { ConfigError } from '../config/load.ts';
import { resolveSidecarPaths } from '../config/sidecar-paths.ts';
import type { IdentityConfig, SidecarConfig } from '../config/sidecar-schema.ts';
import type { Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { createLogGate } from '../core/log-gate.ts';
import { createIPAccessRuntime } from '../filters/ip-access/ip-access-filter.ts';
import { createAppH2cProbe } from '../inbound/app-h2c-probe.ts';
import { createInboundStack } from '../inbound/inbound-stack.ts';
import { createDeprecationReporter } from '../outbound/deprecation-reporter.ts';
import { createOutboundStack } from '../outbound/outbound-stack.ts';
import { createServiceRegistry } from '../outbound/service-registry.ts';
import { createBodyBudget } from '../proxy/body-budget.ts';
import type { CallTelemetry } from '../proxy/call-telemetry.ts';
import { recordRejection } from '../proxy/call-telemetry.ts';
import { parseIp } from '../proxy/client-address.ts';
import type { HttpListener, ListenerHooks } from '../proxy/listener.ts';
import { createHttpListener } from '../proxy/listener.ts';
import { createReadBuffer } from '../proxy/socket-reads.ts';
import { createUpstreamPool } from '../proxy/upstream-pool.ts';
import { createAccessLog } from '../telemetry/access-log.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import { createSidecarMetrics } from '../telemetry/metrics.ts';
import type { RoleDeps } from '../telemetry/role-deps.ts';
import { registerTracingMetrics } from '../telemetry/tracing-metrics.ts';
import { probeApp } from './app-probe.ts';
import type { SidecarInterception } from './interception.ts';
import { startInterception } from './interception.ts';
import type { WorkloadIdentity } from './mesh-identity.ts';
import type { PolicyEnforcement } from './policy-enforcement.ts';
import type { SidecarRateLimiting } from './rate-limiting.ts';
import { advertisedAddress, describeCertificate, describeConfig } from './sidecar-facts.ts';
import type { WorkloadPolicy } from './workload-policy.ts';

export interface SidecarDeps extends RoleDeps {
  readonly random: Random;
}

/**
 * A worker process of a sidecar with `workers: N` (src/sidecar/workers/):
 * certificates and policy snapshots come from its primary, which runs the
 * only CA client and policy subscriber, instead of from its own.
 */
export interface WorkerSources {
  /** Worker processes in all: local rate limits are divided among them. */
  readonly workers: number;
  identity(config: IdentityConfig, deps: { handshakeTimeoutMs: number }): WorkloadIdentity;
  /** Snapshots from the primary, enforced by `enforcement`. */
  policy(enforcement: PolicyEnforcement): WorkloadPolicy;
}

/** A sidecar process: a worker has no admin listener (its primary serves /ready, /metrics... with what adminApi answers). */
export interface SidecarProcess extends Omit<RunningSidecar, 'admin'> {
  readonly admin: AddressInfo | undefined;
  readonly adminApi: AdminDeps;
}

export interface RunningSidecar {
  readonly outbound: AddressInfo;
  readonly inbound: AddressInfo;
  readonly admin: AddressInfo;
  /** The edge TLS listener, when configured. */
  readonly edge: AddressInfo | undefined;
  readonly metrics: SidecarMetrics;
  readonly identity: WorkloadIdentity | undefined;
  /** Stops accepting, lets in-flight calls finish up to `timeoutMs`, then closes everything. */
  drain(timeoutMs?: number): Promise<{ completed: boolean }>;
}

/**
 * The sidecar role: wires listeners, stacks, registry and admin from one frozen
 * config. Order matters: admin first (so /live answers and /ready explains what
 * is missing), then the workload certificate, then the data listeners.
 */
export async function startSidecar(loaded: SidecarConfig, deps: SidecarDeps): Promise<RunningSidecar> {
  const { admin, ...running } = await startSidecarProcess(loaded, deps);
  if (!admin) throw new Error('unreachable: a sidecar without a worker role has an admin listener');
  return { ...running, admin };
}

/** startSidecar, or with `worker` one worker process of a sidecar with several. */
export async function startSidecarProcess(loaded: SidecarConfig, deps: SidecarDeps, worker?: WorkerSources): Promise<SidecarProcess> {
  const config = deps.configDir === undefined ? loaded : resolveSidecarPaths(loaded, deps.configDir);
  const { logger, clock, random } = deps;
  const listeners: { inbound?: HttpListener; outbound?: HttpListener } = {};
  let identity: WorkloadIdentity | undefined;
  const metrics = createSidecarMetrics({
    defaultMetrics: deps.defaultMetrics ?? false,
    inFlight: (direction) => listeners[direction]?.inFlight() ?? 0,
    certNotAfterMs: () => identity?.manager.current()?.facts.notAfter.getTime(),
    bannedAddresses: () => banList.size(),
    localBuckets: () => rateLimiting?.runtime.local.size ?? 0,
    rateLimitUsage: () => rateLimiting?.runtime.usage().values(),
    bufferedBodyBytes: () => bodyBudget.inUse(),
    policyPersisted: () => policyRef.current?.persisted(),
    ...(deps.logDrops ? { droppedLogLines: deps.logDrops.lines } : {}),
  });
  // One memory bound for the request bodies filters read, shared by the mesh and edge listeners.
  const bodyBudget = createBodyBudget(config.limits.maxBufferedBodies);
  // Created once: bans and denial counts outlive the chain rebuilt on every policy snapshot.
  const evictionWarnings = createLogGate(clock, 60_000);
  const ipAccess = createIPAccessRuntime({
    clock,
    random,
    events: {
      banned: (ban) => {
        metrics.ipBans.inc();
        logger.warn(ban, 'address banned after repeated refused calls');
      },
      evicted: (list, address) => {
        metrics.ipBanEvictions.inc({ list });
        if (evictionWarnings.pass() === undefined) return;
        logger.warn({ list, address }, 'auto-ban list full: entries dropped early (see meshgate_ip_ban_evictions_total; raise autoBan.maxEntries)');
      },
      lifted: (ban) => logger.warn(ban, 'ban lifted through the admin API'),
      disabled: (bansDropped) => logger.info({ bansDropped }, 'auto-ban turned off by the policy in force; bans dropped'),
    },
  });
  const { tracing } = deps;
  const banList = ipAccess.banList;
  registerTracingMetrics(metrics.registry, tracing);
  const sampling = config.log.accessLogSampling;
  if (!(sampling >= 0 && sampling <= 1)) logger.warn({ accessLogSampling: sampling }, 'bad telemetry setting: log.accessLogSampling: expected a number from 0 to 1; logging every call');
  const telemetry: CallTelemetry = {
    clock,
    metrics,
    accessLog: createAccessLog(logger, { enabled: config.log.accessLog, sampling: sampling >= 0 && sampling <= 1 ? sampling : 1, random }),
    tracing,
    requestMetrics: config.telemetry.metrics.requests,
  };
  const lifetime = new AbortController();
  let draining = false;
  let registry: ReturnType<typeof createServiceRegistry> | undefined;
  const policyRef: { current?: WorkloadPolicy } = {};
  // Only with a policy source: without one no RateLimitPolicy can arrive, so no Redis connection is opened.
  let rateLimiting: SidecarRateLimiting | undefined;
  let interception: SidecarInterception | undefined;

  const adminApi: AdminDeps = {
    registry: metrics.registry,
    bans: {
      list: () => banList.list(),
      remove(text) {
        const parsed = parseIp(text);
        if (!parsed) return { status: 'invalid' };
        const ban = banList.remove(parsed.address);
        return ban ? { status: 'removed', ban } : { status: 'not_found' };
      },
    },
    async readiness(opts) {
      const appCheck = opts?.skipApp ? 'skipped' : await probeApp(config.inbound.app, config.inbound.readinessPath, 1_000);
      const certificate = !config.identity ? 'disabled' : identity?.manager.valid() ? 'ok' : (identity?.manager.stats().lastError ?? 'waiting for the first certificate');
      const policyState = policyRef.current?.ready();
      const checks = {
        listeners: draining ? 'draining' : listeners.inbound ? 'ok' : 'starting',
        certificate,
        policy: policyState ? (policyState.state === 'ok' ? 'ok' : `${policyState.state}: ${policyState.detail}`) : 'disabled',
        app: appCheck,
      };
      const ready = !draining && listeners.inbound !== undefined && (appCheck === 'ok' || appCheck === 'skipped') && (certificate === 'ok' || certificate === 'disabled') && (policyState?.ok ?? true);
      return { ready, checks };
    },
    configDump: () => ({
      workload: config.workload,
      config: describeConfig(config, tracing),
      rateLimit: rateLimiting?.describe() ?? null,
      interception: interception?.describe() ?? null,
      policy: policyRef.current?.describe() ?? { source: 'none' },
      certificate: describeCertificate(identity),
      endpoints: registry?.services().map((s) => ({
        service: s.cluster.key,
        endpoints: s.cluster.endpoints().map((ep) => ({
          address: ep.address,
          healthy: ep.healthy,
          ejected: ep.ejectedUntil > clock.monotonic(),
          active: ep.activeRequests,
        })),
      })),
    }),
  };
  // A worker's admin questions come from its primary over IPC; the primary serves the port.
  const admin = worker ? undefined : createAdminServer(adminApi);
  const adminAddress = await admin?.listen(config.listeners.admin.port, config.listeners.admin.address);

  // What is not configured is not loaded: certificates (x509, the CA's gRPC client), policy (the kinds' schemas,
  // the subscriber's gRPC, the filters' libraries), Redis and edge TLS are imported only when their section is set.
  if (config.identity && worker) {
    identity = worker.identity(config.identity, { handshakeTimeoutMs: config.limits.headersTimeout });
  } else if (config.identity) {
    const { startWorkloadIdentity } = await import('./workload-identity.ts');
    identity = await startWorkloadIdentity(config.identity, config.workload, {
      clock,
      random,
      logger,
      signal: lifetime.signal,
      handshakeTimeoutMs: config.limits.headersTimeout,
    });
  } else if (!worker) {
    // A worker's primary has said it once for the pod.
    logger.warn('mtls.mode is DISABLE: sidecar-to-sidecar traffic is plaintext and carries no identity');
  }

  // Every upstream HTTP/1.1 socket of this process reads into it, one read at a time (src/proxy/socket-reads.ts).
  const readBuffer = createReadBuffer();
  const services = createServiceRegistry(config.services, {
    clock,
    random,
    idleTimeoutMs: config.limits.idleTimeout,
    readBuffer,
    tlsFor: (service) => (identity && service.tls !== 'none' ? identity.upstreamTls(service) : undefined),
    events: {
      onEject: (service, endpoint, until) => {
        metrics.outlierEjections.inc({ destination_service: service });
        logger.warn({ service, endpoint, ejectedForMs: Math.round(until - clock.monotonic()) }, 'endpoint ejected by outlier detection');
      },
      onReturn: (service, endpoint) => logger.info({ service, endpoint }, 'endpoint returned from ejection'),
    },
  });
  registry = services;
  // Mesh connections made with the previous certificate are replaced as they go idle.
  identity?.manager.onRotate(() => services.refreshConnections());
  // An expired certificate ends mesh connections too, not only new handshakes: fail closed.
  identity?.manager.onExpire(() => {
    logger.error({ spiffeId: identity?.spiffeId }, 'workload certificate expired; outbound mesh calls fail until the CA is reachable');
    services.refreshConnections();
  });
  const app = createUpstreamPool(new URL(config.inbound.app).host, {
    connectTimeoutMs: 2_000,
    maxConnections: 256,
    keepAliveTimeoutMs: Math.min(config.limits.idleTimeout, 30_000),
    readBuffer,
  });
  // Replicas of this workload's service as the registry lists them: a split local fallback divides limits by it.
  const replicas = (): number => services.lookup(config.workload.service, config.workload.namespace)?.cluster.endpoints().length ?? 1;
  // With a policy source, the chain follows the snapshot in force (the disk copy before any listener opens).
  let policy: WorkloadPolicy | undefined;
  if (config.policy) {
    const [{ startRateLimiting }, { createSidecarFilterRuntimes }] = await Promise.all([import('./rate-limiting.ts'), import('./filter-runtimes.ts')]);
    const started = await startRateLimiting(config.rateLimit, { metrics, clock, random, logger, replicas, workers: worker?.workers });
    rateLimiting = started;
    const runtimes = createSidecarFilterRuntimes(config, { clock, random, logger, metrics, ipAccess, rateLimit: started.runtime });
    const parts = { registry: services, metrics, clock, random, logger, runtimes, signal: lifetime.signal };
    if (worker) {
      // A worker compiles and enforces what its primary's subscriber accepted; it loads no subscriber (no gRPC).
      const { createPolicyEnforcement } = await import('./policy-enforcement.ts');
      policy = worker.policy(createPolicyEnforcement(config, { ...parts, logger: logger.child({ component: 'policy' }) }));
    } else {
      const { startWorkloadPolicy } = await import('./workload-policy.ts');
      policy = await startWorkloadPolicy(config, { ...parts, credentials: () => identity?.manager.current() });
    }
  }
  policyRef.current = policy;
  if (!policy && !worker) logger.warn('no policy section: the sidecar enforces no per-call policy (mTLS still applies)');
  const noFilters: readonly Filter[] = [];
  const inboundFilters = (): readonly Filter[] => policy?.inboundFilters() ?? noFilters;
  const inboundTls =
    identity && config.mtls.mode !== 'DISABLE'
      ? identity.listenerTls(config.mtls.mode, (reason, detail) => {
          metrics.tlsHandshakeErrors.inc({ listener: 'inbound', reason });
          logger.warn({ listener: 'inbound', reason, detail }, 'mTLS connection refused');
        })
      : undefined;

  // Requests refused before they became calls are logged like calls; refused connections are counted, one warning a minute.
  const connectionWarnings = createLogGate(clock, 60_000);
  const listenerHooks = (listener: 'inbound' | 'outbound' | 'edge'): ListenerHooks => ({
    onRejected: (rejection) => recordRejection(telemetry, listener === 'outbound' ? 'outbound' : 'inbound', rejection),
    onConnectionRefused: (reason, address) => {
      metrics.connectionsRefused.inc({ listener, reason });
      const heldBack = connectionWarnings.pass(`${listener}:${reason}`);
      if (heldBack !== undefined) logger.warn({ listener, reason, address, heldBack }, 'connection refused: listener limit reached (see meshgate_connections_refused_total)');
    },
    onAbuse: (reason, address) => {
      metrics.connectionsClosed.inc({ listener, reason });
      const heldBack = connectionWarnings.pass(`${listener}:abuse:${reason}`);
      if (heldBack !== undefined) logger.warn({ listener, reason, address, heldBack }, 'connection closed: the caller abused the protocol (see meshgate_connections_closed_total)');
    },
  });

  const ownPorts = [adminAddress?.port ?? config.listeners.admin.port]; // a worker's config carries its primary's bound port; the data ports join once bound
  // Captured connections (config `interception`): koffi is loaded here only when the section is set.
  const captured = await startInterception(config, {
    telemetry,
    logger,
    clock,
    app,
    readBuffer,
    configFile: deps.configFile,
    ownPorts: () => ownPorts,
  });
  interception = captured; // for /config_dump and drain

  // Asked once per minute at most, and only when an HTTP/2 caller needs the answer.
  const appH2c = createAppH2cProbe(config.inbound.app, { clock });
  const inboundStackFor = (edge: boolean) =>
    createInboundStack({
      edge,
      workload: config.workload,
      ownPrincipal: identity?.spiffeId,
      app,
      appProtocol: config.inbound.appProtocol,
      appH2c,
      appTimeoutMs: config.inbound.timeout,
      idleTimeoutMs: config.limits.idleTimeout,
      filters: inboundFilters,
      // Only mesh connections carry a principal; edge callers never do.
      peerPrincipal: (req) => (edge ? undefined : inbound.peerPrincipal(req)),
      telemetry,
      bodyBudget,
      onRefused: (call, verdict) => banList.recordDenial(call, verdict.code), // every filter's refusals count toward auto-ban
      appFor: edge ? undefined : captured?.appFor,
    });
  // Every listener's HTTP/1.1 connections read into this one; the upstream sockets into their own (src/proxy/socket-reads.ts).
  const listenerReadBuffer = createReadBuffer();
  const inbound: HttpListener = createHttpListener('inbound', config.limits, inboundStackFor(false), {
    tls: inboundTls,
    hooks: listenerHooks('inbound'),
    divert: captured?.inbound,
    readBuffer: listenerReadBuffer,
  });
  // Edge callers get their own port so the mesh port never relaxes its client-certificate rule.
  const edgeConfig = config.listeners.edge;
  const edgeTls = edgeConfig
    ? await (await import('../identity/edge-tls.ts')).createEdgeTls(edgeConfig, { logger, handshakeTimeoutMs: config.limits.headersTimeout }).catch((err: NodeJS.ErrnoException) => {
        // A file-system error names its file; anything else is the pair itself (bad PEM, key not matching).
        const field = err.syscall && err.path === edgeConfig.keyFile ? 'keyFile' : 'certFile';
        const problem = err.syscall ? `cannot read ${err.path} (${err.code})` : `not a usable certificate and key pair (${err.message.split('\n')[0]})`;
        throw new ConfigError(`${deps.configFile ?? 'config'}: listeners.edge.${field}: ${problem}`);
      })
    : undefined;
  const edge = edgeTls
    ? createHttpListener('edge', config.limits, inboundStackFor(true), {
        tls: {
          mode: 'STRICT',
          server: edgeTls.server,
          verifyPeer: () => ({ principal: undefined }),
          onRefused: (reason, detail) => {
            metrics.tlsHandshakeErrors.inc({ listener: 'edge', reason });
            // Public callers (scanners, old clients) fail handshakes routinely: one line per reason a minute, the counter has them all.
            const heldBack = connectionWarnings.pass(`edge:tls:${reason}`);
            if (heldBack !== undefined) logger.warn({ listener: 'edge', reason, detail, heldBack }, 'edge TLS connection refused (see meshgate_tls_handshake_errors_total)');
          },
        },
        hooks: listenerHooks('edge'),
        readBuffer: listenerReadBuffer,
      })
    : undefined;
  const outbound = createHttpListener(
    'outbound',
    config.limits,
    createOutboundStack({
      workload: config.workload,
      registry: services,
      idleTimeoutMs: config.limits.idleTimeout,
      telemetry,
      random,
      // Created once: its once-a-minute log state outlives registry updates.
      deprecations: createDeprecationReporter({ caller: config.workload, counter: metrics.deprecatedCalls, clock, logger: logger.child({ component: 'versions' }) }),
      unregistered: captured?.unregistered,
    }),
    { hooks: listenerHooks('outbound'), divert: captured?.outbound, readBuffer: listenerReadBuffer },
  );
  // Workers share each port; the kernel spreads new connections among them.
  const shared = { reusePort: worker !== undefined };
  const bound = {
    outbound: await outbound.listen(config.listeners.outbound.port, config.listeners.outbound.address, shared),
    inbound: await inbound.listen(config.listeners.inbound.port, config.listeners.inbound.address, shared),
    edge: edge && edgeConfig ? await edge.listen(edgeConfig.port, edgeConfig.address, shared) : undefined,
    admin: adminAddress,
  };
  ownPorts.push(bound.outbound.port, bound.inbound.port, ...(bound.edge ? [bound.edge.port] : []));
  listeners.inbound = inbound;
  listeners.outbound = outbound;
  services.start(lifetime.signal);
  await policy?.subscribe(advertisedAddress(config.listeners.inbound.address, bound.inbound.port), lifetime.signal);
  const listening = { outbound: bound.outbound.port, inbound: bound.inbound.port, admin: bound.admin?.port, mtls: config.mtls.mode, spiffeId: identity?.spiffeId };
  logger.info(listening, worker ? 'worker listening' : 'sidecar listening');

  return {
    ...bound,
    adminApi,
    metrics,
    identity,
    async drain(timeoutMs = config.drain.timeout) {
      draining = true;
      const data = edge ? [inbound, outbound, edge] : [inbound, outbound];
      const stopped = Promise.all(data.map((l) => l.stopAccepting()));
      let timer: NodeJS.Timeout | undefined;
      const completed = await Promise.race([Promise.all(data.map((l) => l.whenIdle())).then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
      clearTimeout(timer);
      for (const l of data) l.destroy();
      edgeTls?.close();
      await stopped;
      lifetime.abort();
      // Out of time: upstream calls still open are ended, so no upstream that never answers can hold the exit.
      await Promise.all([services.close({ force: !completed }), completed ? app.close() : app.destroy(), admin?.close(), rateLimiting?.close(), interception?.close()]);
      return { completed };
    },
  };
}
