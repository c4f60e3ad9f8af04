import type { InjectorConfig } from '../config/injector-schema.ts';
import { INJECTED, NAMES, PATHS, PROXY_UID, SIDECAR_PORTS } from './annotations.ts';

/*
 * What the injector adds to a pod, as Kubernetes API objects. Kept apart from
 * the decision (pod-injection.ts) so the shape of the sidecar can be read in
 * one place.
 */

type Json = Record<string, unknown>;

/**
 * Readiness without the app check: the sidecar is a native sidecar, so the app
 * starts only once this passes; waiting for the app here would never end.
 */
export const SIDECAR_READY_PATH = '/ready?skip=app';

/** The iptables init container: root for the netfilter calls, but only NET_ADMIN and NET_RAW. */
export function initContainer(config: InjectorConfig, iptablesArgs: readonly string[]): Json {
  return {
    name: NAMES.initContainer,
    image: config.sidecar.image,
    imagePullPolicy: config.sidecar.imagePullPolicy,
    args: ['iptables', ...iptablesArgs],
    resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { cpu: '500m', memory: '256Mi' } },
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      // iptables takes its lock under /run, in the image.
      readOnlyRootFilesystem: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}

/** The sidecar as a native sidecar (an init container that keeps running), uid 1337, nothing writable but its state folder. */
export function sidecarContainer(config: InjectorConfig, resources: Json, filterSecret?: string): Json {
  const admin = SIDECAR_PORTS.admin;
  return {
    name: NAMES.sidecarContainer,
    image: config.sidecar.image,
    imagePullPolicy: config.sidecar.imagePullPolicy,
    restartPolicy: 'Always',
    // $(POD_IP) is expanded by the kubelet: peers reach this pod at its own address.
    args: ['sidecar', '--config', PATHS.configFile, '--workload-host', '$(POD_IP)'],
    env: [
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'OTEL_RESOURCE_ATTRIBUTES', value: 'k8s.pod.name=$(POD_NAME)' },
    ],
    ports: [
      { name: 'mesh-inbound', containerPort: SIDECAR_PORTS.inbound, protocol: 'TCP' },
      { name: 'meshgate-admin', containerPort: admin, protocol: 'TCP' },
    ],
    startupProbe: { httpGet: { path: SIDECAR_READY_PATH, port: admin }, periodSeconds: 1, timeoutSeconds: 3, failureThreshold: 600 },
    readinessProbe: { httpGet: { path: SIDECAR_READY_PATH, port: admin }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
    livenessProbe: { httpGet: { path: '/live', port: admin }, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
    resources,
    securityContext: {
      runAsUser: PROXY_UID,
      runAsGroup: PROXY_UID,
      runAsNonRoot: true,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: NAMES.configVolume, mountPath: PATHS.configDir, readOnly: true },
      { name: NAMES.tokenVolume, mountPath: PATHS.tokenDir, readOnly: true },
      { name: NAMES.stateVolume, mountPath: PATHS.stateDir },
      ...(filterSecret !== undefined ? [{ name: NAMES.filterSecretsVolume, mountPath: PATHS.filterSecretsDir, readOnly: true }] : []),
    ],
  };
}

/** The config and trust bundle (from the pod's own annotations), the bootstrap token, and the last-known-good policy folder. */
export function injectedVolumes(config: InjectorConfig, filterSecret?: string): Json[] {
  const annotation = (key: string): Json => ({ fieldRef: { fieldPath: `metadata.annotations['${key}']` } });
  return [
    {
      name: NAMES.configVolume,
      downwardAPI: {
        items: [
          { path: 'sidecar.yaml', ...annotation(INJECTED.sidecarConfig) },
          { path: 'trust-bundle.pem', ...annotation(INJECTED.trustBundle) },
        ],
      },
    },
    {
      name: NAMES.tokenVolume,
      projected: {
        sources: [{ serviceAccountToken: { audience: config.mesh.token.audience, expirationSeconds: config.mesh.token.expirationSeconds, path: 'meshgate-ca-token' } }],
      },
    },
    { name: NAMES.stateVolume, emptyDir: { sizeLimit: '64Mi' } },
    // Keys for checks of your own (meshgate.hmacSha256Secret), mounted in the sidecar only.
    ...(filterSecret !== undefined ? [{ name: NAMES.filterSecretsVolume, secret: { secretName: filterSecret, defaultMode: 0o444 } }] : []),
  ];
}
