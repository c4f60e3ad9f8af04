import type { AddressInfo } from 'node:net';
import { createAdminServer } from '../admin/admin-server.ts';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { createInboundStack } from '../inbound/inbound-stack.ts';
import { createOutboundStack } from '../outbound/outbound-stack.ts';
import { createServiceRegistry } from '../outbound/service-registry.ts';
import type { CallTelemetry } from '../proxy/call-telemetry.ts';
import { createHttpListener } from '../proxy/listener.ts';
import type { HttpListener } from '../proxy/listener.ts';
import { createUpstreamPool } from '../proxy/upstream-pool.ts';
import { createAccessLog } from '../telemetry/access-log.ts';
import type { Logger } from '../telemetry/logger.ts';
import { createSidecarMetrics } from '../telemetry/metrics.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';
import { probeApp } from './app-probe.ts';

export interface SidecarDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly random: Random;
  /** Process-wide metrics (event loop, memory); off in tests that run several sidecars. */
  readonly defaultMetrics?: boolean;
  /** Path of the config file, for error messages. */
  readonly configFile?: string;
}

export interface RunningSidecar {
  readonly outbound: AddressInfo;
  readonly inbound: AddressInfo;
  readonly admin: AddressInfo;
  readonly metrics: SidecarMetrics;
  /** Stops accepting, lets in-flight calls finish up to `timeoutMs`, then closes everything. */
  drain(timeoutMs?: number): Promise<{ completed: boolean }>;
}

/** The sidecar role: wires listeners, stacks, registry and admin from one frozen config. */
export async function startSidecar(config: SidecarConfig, deps: SidecarDeps): Promise<RunningSidecar> {
  const { logger, clock, random } = deps;
  const listeners: { inbound?: HttpListener; outbound?: HttpListener } = {};
  const metrics = createSidecarMetrics({
    defaultMetrics: deps.defaultMetrics ?? false,
    inFlight: (direction) => listeners[direction]?.inFlight() ?? 0,
  });
  const telemetry: CallTelemetry = { clock, metrics, accessLog: createAccessLog(logger, config.log.accessLog) };
  const lifetime = new AbortController();
  let draining = false;

  const registry = createServiceRegistry(config.services, {
    clock,
    random,
    idleTimeoutMs: config.limits.idleTimeout,
    file: deps.configFile ?? 'config',
    events: {
      onEject: (service, endpoint, until) => {
        metrics.outlierEjections.inc({ destination_service: service });
        logger.warn({ service, endpoint, ejectedForMs: Math.round(until - clock.monotonic()) }, 'endpoint ejected by outlier detection');
      },
      onReturn: (service, endpoint) => logger.info({ service, endpoint }, 'endpoint returned from ejection'),
    },
  });
  const app = createUpstreamPool(new URL(config.inbound.app).host, {
    connectTimeoutMs: 2_000,
    maxConnections: 256,
    keepAliveTimeoutMs: Math.min(config.limits.idleTimeout, 30_000),
  });
  // The policy-driven chains arrive with the policy issues; until then both are empty.
  const inboundFilters: readonly Filter[] = [];
  const outboundFilters: readonly Filter[] = [];

  const inbound = createHttpListener(
    'inbound',
    config.limits,
    createInboundStack({
      workload: config.workload,
      app,
      appProtocol: config.inbound.appProtocol,
      appTimeoutMs: config.inbound.timeout,
      idleTimeoutMs: config.limits.idleTimeout,
      filters: () => inboundFilters,
      peerPrincipal: () => undefined,
      telemetry,
    }),
  );
  const outbound = createHttpListener(
    'outbound',
    config.limits,
    createOutboundStack({
      workload: config.workload,
      registry,
      idleTimeoutMs: config.limits.idleTimeout,
      filters: () => outboundFilters,
      telemetry,
      random,
    }),
  );
  listeners.inbound = inbound;
  listeners.outbound = outbound;
  const admin = createAdminServer({
    registry: metrics.registry,
    async readiness() {
      const appCheck = await probeApp(config.inbound.app, config.inbound.readinessPath, 1_000);
      const checks = { listeners: draining ? 'draining' : 'ok', app: appCheck };
      return { ready: !draining && appCheck === 'ok', checks };
    },
    configDump: () => ({
      workload: config.workload,
      config,
      policy: { version: null },
      certificate: null,
      endpoints: registry.services().map((s) => ({
        service: s.cluster.key,
        endpoints: s.cluster.endpoints().map((ep) => ({
          address: ep.address,
          healthy: ep.healthy,
          ejected: ep.ejectedUntil > clock.monotonic(),
          active: ep.activeRequests,
        })),
      })),
    }),
  });

  const bound = {
    outbound: await outbound.listen(config.listeners.outbound.port, config.listeners.outbound.address),
    inbound: await inbound.listen(config.listeners.inbound.port, config.listeners.inbound.address),
    admin: await admin.listen(config.listeners.admin.port, config.listeners.admin.address),
  };
  registry.start(lifetime.signal);
  logger.info({ outbound: bound.outbound.port, inbound: bound.inbound.port, admin: bound.admin.port }, 'sidecar listening');

  return {
    ...bound,
    metrics,
    async drain(timeoutMs = config.drain.timeout) {
      draining = true;
      const stopped = Promise.all([inbound.stopAccepting(), outbound.stopAccepting()]);
      let timer: NodeJS.Timeout | undefined;
      const completed = await Promise.race([
        Promise.all([inbound.whenIdle(), outbound.whenIdle()]).then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
      clearTimeout(timer);
      inbound.destroy();
      outbound.destroy();
      await stopped;
      lifetime.abort();
      await Promise.all([registry.close(), app.close(), admin.close()]);
      return { completed };
    },
  };
}
