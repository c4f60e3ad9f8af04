import type { RunningCa } from '../ca/ca-server.ts';
import type { CaConfig } from '../config/ca-schema.ts';
import type { PolicyServerConfig } from '../config/policy-server-schema.ts';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { RunningPolicyServer } from '../policy-server/policy-server.ts';
import type { RunningSidecar } from '../sidecar/sidecar.ts';
import type { RoleDescriptor } from './run-role.ts';
import { UsageError } from './usage-error.ts';

/** The three long-running roles, as runRole (run-role.ts) runs them. */

export const SIDECAR_ROLE: RoleDescriptor<SidecarConfig, RunningSidecar> = {
  name: 'sidecar',
  flags: { 'workload-host': { type: 'string' } },
  schema: async () => (await import('../config/sidecar-schema.ts')).sidecarConfigSchema,
  withFlags: (config, values) => withWorkloadHost(config, values['workload-host'] as string | undefined),
  tracing: (config) => ({
    serviceName: `${config.workload.service}.${config.workload.namespace}`,
    resource: { 'service.namespace': config.workload.namespace, 'meshgate.role': 'sidecar', 'meshgate.workload': config.workload.service },
  }),
  start: async (config, deps) => (await import('../sidecar/sidecar.ts')).startSidecar(config, deps),
  async stop(sidecar, { signal, logger, config }) {
    logger.info({ signal, timeoutMs: config.drain.timeout }, 'draining');
    const { completed } = await sidecar.drain();
    logger.info({ completed }, 'drained');
  },
};

export const CA_ROLE: RoleDescriptor<CaConfig, RunningCa> = {
  name: 'ca',
  schema: async () => (await import('../config/ca-schema.ts')).caConfigSchema,
  grpc: true,
  tracing: () => ({ serviceName: 'meshgate-ca', resource: { 'service.namespace': 'meshgate-system', 'meshgate.role': 'ca' } }),
  start: async (config, deps) => (await import('../ca/ca-server.ts')).startCa(config, deps),
  stop: closeRole,
};

export const POLICY_SERVER_ROLE: RoleDescriptor<PolicyServerConfig, RunningPolicyServer> = {
  name: 'policy-server',
  schema: async () => (await import('../config/policy-server-schema.ts')).policyServerConfigSchema,
  grpc: true,
  tracing: () => ({ serviceName: 'meshgate-policy-server', resource: { 'service.namespace': 'meshgate-system', 'meshgate.role': 'policy-server' } }),
  start: async (config, deps) => (await import('../policy-server/policy-server.ts')).startPolicyServer(config, deps),
  stop: closeRole,
};

async function closeRole(running: { close(): Promise<void> }, { signal, logger }: { readonly signal: string; readonly logger: { info(obj: object, msg: string): void } }): Promise<void> {
  logger.info({ signal }, 'stopping');
  await running.close();
}

/** `--workload-host`: the pod IP is known only when the pod runs, after its config file was written. */
function withWorkloadHost(config: SidecarConfig, host: string | undefined): SidecarConfig {
  if (host === undefined) return config;
  if (!/^([A-Za-z0-9.-]+|[0-9a-fA-F:.]+)$/.test(host)) throw new UsageError(`meshgate sidecar: --workload-host: expected a host name or IP address, got "${host}"`);
  const address = host.includes(':') ? `[${host}]:${config.listeners.inbound.port}` : `${host}:${config.listeners.inbound.port}`;
  return Object.freeze({ ...config, workload: Object.freeze({ ...config.workload, address }) });
}
