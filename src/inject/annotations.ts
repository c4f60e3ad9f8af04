/*
 * Names the injector reads from and writes to pods. Users type the first
 * group into their manifests; the second is how a pod says it was injected
 * and carries its sidecar's config (the README lists them all).
 */

/** Set on a pod (template) by its owner. */
export const ANNOTATIONS = {
  /** "false" opts the pod out; "true" (or absent) lets it be injected. */
  inject: 'meshgate.dev/inject',
  /** Service name of the workload; default: label app.kubernetes.io/name, then app. */
  service: 'meshgate.dev/service',
  /** Port (number or container port name) the sidecar forwards inbound calls to; default: the first container's first TCP port. */
  appPort: 'meshgate.dev/app-port',
  excludeInboundPorts: 'meshgate.dev/exclude-inbound-ports',
  excludeOutboundPorts: 'meshgate.dev/exclude-outbound-ports',
  excludeOutboundCidrs: 'meshgate.dev/exclude-outbound-cidrs',
  proxyCpu: 'meshgate.dev/proxy-cpu',
  proxyMemory: 'meshgate.dev/proxy-memory',
  proxyCpuLimit: 'meshgate.dev/proxy-cpu-limit',
  proxyMemoryLimit: 'meshgate.dev/proxy-memory-limit',
  /** Worker processes of the sidecar (`workers`); default: from its CPU and memory limits (sidecar-workers.ts). */
  proxyWorkers: 'meshgate.dev/proxy-workers',
  /** A Secret of the pod's namespace mounted in the sidecar for checks of your own to sign with (userFilters.secretsDir). */
  filterSecrets: 'meshgate.dev/filter-secrets',
} as const;

/** Written by the injector. */
export const INJECTED = {
  /** Marks an injected pod; its value names what was added. */
  status: 'meshgate.dev/status',
  /** The sidecar's config file, projected into the sidecar by a downward API volume. */
  sidecarConfig: 'meshgate.dev/sidecar-config',
  /** The mesh's trust bundle (PEM), projected next to the config. */
  trustBundle: 'meshgate.dev/trust-bundle',
} as const;

/** Namespace label the MutatingWebhookConfiguration's namespaceSelector matches. */
const NAMESPACE_LABEL = { key: 'meshgate.dev/inject', value: 'enabled' } as const;

/** Names of what the injector adds; a pod that already has one of the containers is left alone. */
export const NAMES = {
  initContainer: 'meshgate-init',
  sidecarContainer: 'meshgate-proxy',
  configVolume: 'meshgate-config',
  tokenVolume: 'meshgate-token',
  stateVolume: 'meshgate-state',
  filterSecretsVolume: 'meshgate-filter-secrets',
} as const;

/** Where the injected volumes are mounted in the sidecar. */
export const PATHS = {
  configDir: '/etc/meshgate/sidecar',
  configFile: '/etc/meshgate/sidecar/sidecar.yaml',
  trustBundleFile: '/etc/meshgate/sidecar/trust-bundle.pem',
  tokenDir: '/var/run/secrets/meshgate/tokens',
  tokenFile: '/var/run/secrets/meshgate/tokens/meshgate-ca-token',
  stateDir: '/var/lib/meshgate',
  filterSecretsDir: '/var/run/secrets/meshgate/filters',
} as const;

/** Ports of the injected sidecar; an app container that declares one of them cannot be injected. */
export const SIDECAR_PORTS = { admin: 15000, outbound: 15001, inbound: 15006 } as const;
export const PROXY_UID = 1337;
