import type { InjectorConfig } from '../config/injector-schema.ts';
import { isCidr, QUANTITY } from '../config/injector-schema.ts';
import { ANNOTATIONS, INJECTED, NAMES, PATHS, PROXY_UID, SIDECAR_PORTS } from './annotations.ts';
import { buildIptablesArgs } from './iptables-args.ts';
import { initContainer, injectedVolumes, sidecarContainer } from './pod-parts.ts';
import { sidecarConfigYaml } from './sidecar-config.ts';
import { sidecarWorkers } from './sidecar-workers.ts';

/*
 * The one code path of injection, shared by `meshgate inject` (files) and the
 * admission webhook (one pod per request): given a pod template's metadata
 * and spec, decide whether to inject and what to change. The changes are
 * whole values at three fixed paths, so the CLI can set them in a YAML
 * document (keeping its comments) and the webhook can send them as JSON
 * Patch `add` operations, and both add exactly the same thing.
 */

type Json = Record<string, unknown>;

export interface InjectionInput {
  /** The pod template's (or pod's) metadata and spec, as parsed; never modified. */
  readonly metadata: unknown;
  readonly spec: unknown;
  /** Namespace the pod runs in (the object's, or the admission request's). */
  readonly namespace: string;
}

/** A whole value to put at `path`, relative to the pod (template). */
interface PodChange {
  readonly path: readonly ['metadata', 'annotations'] | readonly ['spec', 'initContainers'] | readonly ['spec', 'volumes'];
  readonly value: unknown;
}

export type InjectionOutcome =
  | { readonly status: 'injected'; readonly service: string; readonly changes: readonly PodChange[]; readonly warnings: readonly string[] }
  /** Left alone on purpose: opted out, already injected, host network, no containers. */
  | { readonly status: 'skipped'; readonly reason: string }
  /** Cannot be injected safely as it is: the owner must change the pod. */
  | { readonly status: 'refused'; readonly message: string };

export interface InjectionSettings {
  readonly config: InjectorConfig;
  /** PEM roots copied into each pod. */
  readonly trustBundlePem: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** A Kubernetes object name (DNS subdomain, RFC 1123). */
const SECRET_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function injectPod(input: InjectionInput, settings: InjectionSettings): InjectionOutcome {
  const metadata = asObject(input.metadata);
  const spec = asObject(input.spec);
  const annotations = stringMap(metadata.annotations);
  const labels = stringMap(metadata.labels);
  const optIn = annotations[ANNOTATIONS.inject];
  if (optIn === 'false') return { status: 'skipped', reason: `opted out (${ANNOTATIONS.inject}: "false")` };
  if (optIn !== undefined && optIn !== 'true') return { status: 'refused', message: `${ANNOTATIONS.inject}: expected "true" or "false", got ${JSON.stringify(optIn)}` };
  const containers = asArray(spec.containers).map(asObject);
  const initContainers = asArray(spec.initContainers).map(asObject);
  if (annotations[INJECTED.status] !== undefined || [...containers, ...initContainers].some((c) => c.name === NAMES.sidecarContainer)) {
    return { status: 'skipped', reason: 'already injected' };
  }
  if (containers.length === 0) return { status: 'skipped', reason: 'no containers' };
  if (spec.hostNetwork === true) return { status: 'skipped', reason: "hostNetwork pod: its traffic is the node's, which a sidecar must not capture" };

  const service = annotations[ANNOTATIONS.service] ?? labels['app.kubernetes.io/name'] ?? labels.app;
  if (service === undefined) {
    return { status: 'refused', message: `cannot tell the service: set label app.kubernetes.io/name or app, or annotation ${ANNOTATIONS.service}` };
  }
  if (!DNS_LABEL.test(service) || service.length > 63) return { status: 'refused', message: `service ${JSON.stringify(service)} is not a DNS label (lower-case letters, digits, dashes)` };

  const problems: string[] = [];
  const lists = {
    excludeInboundPorts: portList(annotations, ANNOTATIONS.excludeInboundPorts, problems),
    excludeOutboundPorts: portList(annotations, ANNOTATIONS.excludeOutboundPorts, problems),
    excludeOutboundCidrs: cidrList(annotations, ANNOTATIONS.excludeOutboundCidrs, problems),
  };
  const appPort = resolveAppPort(annotations[ANNOTATIONS.appPort], containers, problems);
  const resources = sidecarResources(settings.config, annotations, problems);
  const filterSecret = annotations[ANNOTATIONS.filterSecrets];
  if (filterSecret !== undefined && !SECRET_NAME.test(filterSecret)) {
    problems.push(`${ANNOTATIONS.filterSecrets}: expected the name of a Secret in the pod's namespace (a DNS subdomain), got ${JSON.stringify(filterSecret)}`);
  }
  const workers = sidecarWorkers(resources.limits, annotations[ANNOTATIONS.proxyWorkers], problems, ANNOTATIONS.proxyWorkers);
  for (const container of [...containers, ...initContainers]) {
    for (const p of asArray(container.ports).map(asObject)) {
      if (Object.values(SIDECAR_PORTS).includes(p.containerPort as never)) {
        problems.push(`container ${JSON.stringify(container.name)} declares port ${p.containerPort}, which the sidecar uses (${Object.values(SIDECAR_PORTS).join(', ')})`);
      }
    }
  }
  // The redirect rules let the proxy uid's traffic out untouched: an app running as it would bypass the sidecar.
  const podUid = asObject(spec.securityContext).runAsUser;
  for (const container of [...containers, ...initContainers]) {
    const uid = asObject(container.securityContext).runAsUser ?? podUid;
    if (uid === PROXY_UID) problems.push(`container ${JSON.stringify(container.name)} runs as uid ${PROXY_UID}, the sidecar's: its outbound calls would bypass the sidecar; pick another runAsUser`);
  }
  if (problems.length > 0) return { status: 'refused', message: problems[0]! };

  const excludeInbound = unique([...settings.config.interception.excludeInboundPorts, ...lists.excludeInboundPorts]);
  // Probes come from the kubelet on the node, in plaintext: one that reaches a captured port meets the mTLS listener and fails.
  const probePorts = unique(containers.flatMap((c) => probeTargets(c)));
  const captured = appPort !== undefined && !excludeInbound.includes(appPort) ? appPort : undefined;
  for (const { container, probe, port } of containers.flatMap((c) => probeTargets(c, true))) {
    if (port === captured) {
      return {
        status: 'refused',
        message:
          `container ${JSON.stringify(container)} ${probe} uses port ${port}, which the sidecar captures (the app port): kubelet probes come from the node in plaintext and would meet the mTLS listener. ` +
          `Serve probes on another port, or let port ${port} be reached without the sidecar with annotation ${ANNOTATIONS.excludeInboundPorts}: "${port}"`,
      };
    }
  }
  const serviceAccount = typeof spec.serviceAccountName === 'string' ? spec.serviceAccountName : typeof spec.serviceAccount === 'string' ? spec.serviceAccount : 'default';
  const version = labels.version ?? labels['app.kubernetes.io/version'];
  const sidecarConfig = sidecarConfigYaml(
    {
      service,
      namespace: input.namespace,
      serviceAccount,
      appPort,
      labels: version !== undefined ? { version } : {},
      workers,
      ...(filterSecret !== undefined ? { filterSecretsDir: PATHS.filterSecretsDir } : {}),
    },
    settings.config,
  );
  if ('problem' in sidecarConfig) return { status: 'refused', message: sidecarConfig.problem };

  const iptablesArgs = buildIptablesArgs({
    inboundPort: SIDECAR_PORTS.inbound,
    outboundPort: SIDECAR_PORTS.outbound,
    proxyUid: PROXY_UID,
    appPorts: captured !== undefined ? [captured] : [],
    excludeInboundPorts: unique([...excludeInbound, ...probePorts.filter((p) => p !== captured)]).sort((a, b) => a - b),
    excludeOutboundPorts: unique([...settings.config.interception.excludeOutboundPorts, ...lists.excludeOutboundPorts]),
    excludeOutboundCidrs: unique([...settings.config.interception.excludeOutboundCidrs, ...lists.excludeOutboundCidrs]),
  });
  const newAnnotations: Json = { ...asObject(metadata.annotations) };
  newAnnotations[INJECTED.status] = JSON.stringify({ containers: [NAMES.initContainer, NAMES.sidecarContainer], volumes: injectedVolumes(settings.config, filterSecret).map((v) => v.name) });
  newAnnotations[INJECTED.sidecarConfig] = sidecarConfig.yaml;
  newAnnotations[INJECTED.trustBundle] = settings.trustBundlePem;
  // Scrape the sidecar unless the pod already points Prometheus at its own metrics.
  if (newAnnotations['prometheus.io/scrape'] === undefined) {
    newAnnotations['prometheus.io/scrape'] = 'true';
    newAnnotations['prometheus.io/port'] = String(SIDECAR_PORTS.admin);
    newAnnotations['prometheus.io/path'] = '/metrics';
  }
  // Registered endpoints carry no identity list: peers expect spiffe://<td>/ns/<namespace>/sa/<service>.
  const warnings =
    serviceAccount === service
      ? []
      : [
          `service account "${serviceAccount}" is not the service's name: peers expect spiffe://${settings.config.mesh.trustDomain}/ns/${input.namespace}/sa/${service} (upstream.identity_mismatch otherwise); run it as service account "${service}"`,
        ];
  return {
    status: 'injected',
    service,
    warnings,
    changes: [
      { path: ['metadata', 'annotations'], value: newAnnotations },
      {
        path: ['spec', 'initContainers'],
        // First, in this order: the redirect rules exist before anything runs, and the sidecar is up before the other init containers and the app.
        value: [initContainer(settings.config, iptablesArgs), sidecarContainer(settings.config, resources, filterSecret), ...asArray(spec.initContainers)],
      },
      { path: ['spec', 'volumes'], value: [...asArray(spec.volumes), ...injectedVolumes(settings.config, filterSecret)] },
    ],
  };
}

function resolveAppPort(annotation: string | undefined, containers: readonly Json[], problems: string[]): number | undefined {
  const tcpPorts = containers.flatMap((c) => asArray(c.ports).map(asObject)).filter((p) => p.protocol === undefined || p.protocol === 'TCP');
  if (annotation === undefined) {
    const first = asArray(containers[0]?.ports)
      .map(asObject)
      .find((p) => p.protocol === undefined || p.protocol === 'TCP');
    return typeof first?.containerPort === 'number' ? first.containerPort : undefined;
  }
  if (/^\d{1,5}$/.test(annotation) && Number(annotation) >= 1 && Number(annotation) <= 65535) return Number(annotation);
  const named = tcpPorts.find((p) => p.name === annotation);
  if (typeof named?.containerPort === 'number') return named.containerPort;
  problems.push(`${ANNOTATIONS.appPort}: expected a port number or the name of a container port, got ${JSON.stringify(annotation)}`);
  return undefined;
}

const PROBES = ['startupProbe', 'livenessProbe', 'readinessProbe'] as const;

function probeTargets(container: Json): number[];
function probeTargets(container: Json, detailed: true): { container: unknown; probe: string; port: number }[];
function probeTargets(container: Json, detailed?: true): unknown[] {
  const out: { container: unknown; probe: string; port: number }[] = [];
  const ports = asArray(container.ports).map(asObject);
  for (const probe of PROBES) {
    const p = asObject(container[probe]);
    for (const action of ['httpGet', 'tcpSocket', 'grpc'] as const) {
      const target = asObject(p[action]).port;
      if (target === undefined) continue;
      const port = typeof target === 'number' ? target : ports.find((cp) => cp.name === target)?.containerPort;
      if (typeof port === 'number') out.push({ container: container.name, probe, port });
    }
  }
  return detailed ? out : out.map((t) => t.port);
}

type ResourcePair = { cpu?: string; memory?: string };

function sidecarResources(config: InjectorConfig, annotations: Readonly<Record<string, string>>, problems: string[]): { requests: ResourcePair; limits: ResourcePair } {
  const pick = (annotation: string, fallback: string | undefined): string | undefined => {
    const value = annotations[annotation];
    if (value === undefined) return fallback;
    if (!QUANTITY.test(value)) problems.push(`${annotation}: expected a quantity like 100m, 1, 128Mi or 1Gi, got ${JSON.stringify(value)}`);
    return value;
  };
  const pair = (cpu: string | undefined, memory: string | undefined): ResourcePair => ({ ...(cpu !== undefined ? { cpu } : {}), ...(memory !== undefined ? { memory } : {}) });
  const { requests, limits } = config.sidecar.resources;
  return {
    requests: pair(pick(ANNOTATIONS.proxyCpu, requests.cpu), pick(ANNOTATIONS.proxyMemory, requests.memory)),
    limits: pair(pick(ANNOTATIONS.proxyCpuLimit, limits.cpu), pick(ANNOTATIONS.proxyMemoryLimit, limits.memory)),
  };
}

function portList(annotations: Readonly<Record<string, string>>, name: string, problems: string[]): number[] {
  return listOf(annotations[name]).flatMap((text) => {
    const port = Number(text);
    if (/^\d{1,5}$/.test(text) && port >= 1 && port <= 65535) return [port];
    problems.push(`${name}: expected comma-separated ports 1-65535, got ${JSON.stringify(text)}`);
    return [];
  });
}

function cidrList(annotations: Readonly<Record<string, string>>, name: string, problems: string[]): string[] {
  return listOf(annotations[name]).filter((text) => {
    if (isCidr(text)) return true;
    problems.push(`${name}: expected comma-separated CIDRs like 10.0.0.0/8, got ${JSON.stringify(text)}`);
    return false;
  });
}

function listOf(text: string | undefined): string[] {
  return (text ?? '')
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

function unique<T>(values: readonly T[]): T[] {
  return [...new Set(values)];
}

function asObject(value: unknown): Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : {};
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(asObject(value))) if (typeof v === 'string') out[key] = v;
  return out;
}
