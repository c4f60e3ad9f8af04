import type { RunningCa } from '../ca/ca-server.ts';
import type { CaConfig } from '../config/ca-schema.ts';
import type { PolicyServerConfig } from '../config/policy-server-schema.ts';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { RunningPolicyServer } from '../policy-server/policy-server.ts';

import type { RoleDescriptor } from './run-role.ts';
import { UsageError } from './usage-error.ts';

/** The three long-running roles, as runRole (run-role.ts) runs them. */

/** A running sidecar as the CLI stops it: one process, or a primary with `workers` worker processes. */
interface SidecarHandle {
  drain(timeoutMs?: number): Promise<{ completed: boolean }>;
  readonly fatal?: Promise<Error>;
}

export const SIDECAR_ROLE: RoleDescriptor<SidecarConfig, SidecarHandle> = {
  name: 'sidecar',
  releasesHeapWhenQuiet: (config) => config.memory.releaseWhenQuiet,
  flags: { 'workload-host': { type: 'string' } },
  schema: async () => (await import('../config/sidecar-schema.ts')).sidecarConfigSchema,
  withFlags: (config, values) => withWorkloadHost(config, values['workload-host'] as string | undefined),
  tracing: (config) => ({
    serviceName: `${config.workload.service}.${config.workload.namespace}`,
    resource: { 'service.namespace': config.workload.namespace, 'meshgate.role': 'sidecar', 'meshgate.workload': config.workload.service },
  }),
  // workers: 1 is the one process it always was: no cluster, no IPC, nothing more loaded.
  start: async (config, deps) =>
    config.workers > 1 ? (await import('../sidecar/workers/primary.ts')).startSidecarPrimary(config, deps) : (await import('../sidecar/sidecar.ts')).startSidecar(config, deps),
  failure: (sidecar) => sidecar.fatal,
  sharedStdout: (config) => config.workers > 1,
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
  // Port 0 is chosen when the listener binds, after this address is made: peers would be told to dial port 0.
  if (config.listeners.inbound.port === 0)
    throw new UsageError('meshgate sidecar: --workload-host needs a fixed listeners.inbound.port (peers dial HOST:PORT; 0 is not known before the listener binds)');
  const address = host.includes(':') ? `[${host}]:${config.listeners.inbound.port}` : `${host}:${config.listeners.inbound.port}`;
  return Object.freeze({ ...config, workload: Object.freeze({ ...config.workload, address }) });
}
