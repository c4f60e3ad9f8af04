import { stringify } from 'yaml';
import type { InjectorConfig } from '../config/injector-schema.ts';
import { describeIssue } from '../config/load.ts';
import type { SidecarConfigInput } from '../config/sidecar-schema.ts';
import { sidecarConfigSchema } from '../config/sidecar-schema.ts';
import { PATHS, SIDECAR_PORTS } from './annotations.ts';

type TracingInput = NonNullable<SidecarConfigInput['telemetry']>['tracing'];

export interface SidecarWorkload {
  readonly service: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The port the sidecar forwards inbound calls to; undefined when the pod serves none. */
  readonly appPort: number | undefined;
  /** Registered with the endpoint (route subsets), e.g. { version: v2 }. */
  readonly labels: Readonly<Record<string, string>>;
  /** Worker processes (sidecar-workers.ts); 1 writes no `workers` field. */
  readonly workers: number;
  /** Where the pod's meshgate.dev/filter-secrets Secret is mounted, when it names one. */
  readonly filterSecretsDir?: string;
}

/** Port named in inbound.app of a pod that serves nothing: no inbound call is redirected to it. */
const NOMINAL_APP_PORT = 8080;

/**
 * The sidecar config file of one pod, as YAML. Checked against the sidecar's
 * own schema here, so a pod is never given a config its sidecar would refuse
 * at start (a crash loop the pod's owner could not explain): the problem
 * comes back as a string instead.
 */
export function sidecarConfigYaml(workload: SidecarWorkload, config: InjectorConfig): { yaml: string } | { problem: string } {
  const input: SidecarConfigInput = {
    workload: { service: workload.service, namespace: workload.namespace, ...(Object.keys(workload.labels).length > 0 ? { labels: { ...workload.labels } } : {}) },
    listeners: {
      outbound: { address: '127.0.0.1', port: SIDECAR_PORTS.outbound },
      inbound: { address: '0.0.0.0', port: SIDECAR_PORTS.inbound },
      // Not loopback: the kubelet probes it and Prometheus scrapes it from outside the pod.
      admin: { address: '0.0.0.0', port: SIDECAR_PORTS.admin },
    },
    inbound: { app: `http://127.0.0.1:${workload.appPort ?? NOMINAL_APP_PORT}` },
    // The init container's rules redirect the pod's traffic: the sidecar reads where each
    // connection was going (the app port inbound; passthrough or refusal outbound).
    interception: {},
    identity: {
      trustDomain: config.mesh.trustDomain,
      serviceAccount: workload.serviceAccount,
      ca: { address: config.mesh.ca.address, serverName: config.mesh.ca.serverName, trustBundleFile: PATHS.trustBundleFile },
      tokenFile: PATHS.tokenFile,
    },
    mtls: { mode: config.sidecar.mtlsMode },
    ...(config.mesh.policyServers.length > 0 ? { policy: { servers: [...config.mesh.policyServers], stateDir: PATHS.stateDir } } : {}),
    ...(config.mesh.redisUrl ? { rateLimit: { redis: { url: config.mesh.redisUrl } } } : {}),
    ...(workload.workers > 1 ? { workers: workload.workers } : {}),
    ...(workload.filterSecretsDir !== undefined ? { userFilters: { secretsDir: workload.filterSecretsDir } } : {}),
    log: { level: config.sidecar.logLevel },
    ...(config.mesh.tracing ? { telemetry: { tracing: stripUndefined(config.mesh.tracing) as TracingInput } } : {}),
  };
  const parsed = sidecarConfigSchema.safeParse(input);
  if (!parsed.success) return { problem: `the sidecar config would be invalid: ${describeIssue(parsed.error.issues[0]!, input)[0]}` };
  const header = `# meshgate sidecar config for ${workload.service}.${workload.namespace}, written by the injector.\n`;
  return { yaml: header + stringify(input, { lineWidth: 0 }) };
}

/** Drops undefined fields and empty sub-objects the schema's defaults filled in, so the file holds what was configured. */
function stripUndefined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripUndefined);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    const cleaned = stripUndefined(child);
    if (cleaned === undefined) continue;
    if (cleaned !== null && typeof cleaned === 'object' && !Array.isArray(cleaned) && Object.keys(cleaned).length === 0) continue;
    out[key] = cleaned;
  }
  return out;
}
