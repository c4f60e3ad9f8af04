import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { injectorConfigSchema } from '../../../src/config/injector-schema.ts';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import type { InjectionOutcome } from '../../../src/inject/pod-injection.ts';
import { injectPod } from '../../../src/inject/pod-injection.ts';

const settings = {
  config: injectorConfigSchema.parse({}),
  trustBundlePem: readFileSync(new URL('../../fixtures/inject/trust-bundle.pem', import.meta.url), 'utf8'),
};

function pod(overrides: { labels?: Record<string, string>; annotations?: Record<string, string>; spec?: Record<string, unknown>; container?: Record<string, unknown> } = {}) {
  return {
    metadata: { labels: overrides.labels ?? { app: 'web' }, ...(overrides.annotations ? { annotations: overrides.annotations } : {}) },
    spec: { containers: [{ name: 'web', image: 'web:1', ports: [{ containerPort: 8080 }], ...overrides.container }], ...overrides.spec },
    namespace: 'shop',
  };
}

function injected(outcome: InjectionOutcome) {
  if (outcome.status !== 'injected') throw new Error(`expected injected, got ${JSON.stringify(outcome)}`);
  const at = (path: string) => outcome.changes.find((c) => c.path.join('.') === path)!.value as any;
  return { annotations: at('metadata.annotations'), initContainers: at('spec.initContainers'), volumes: at('spec.volumes') };
}

describe('injectPod', () => {
  it('adds the iptables init container and the native sidecar, least privilege each', () => {
    const { initContainers, volumes, annotations } = injected(injectPod(pod(), settings));
    const [init, sidecar] = initContainers;
    expect(init.args.slice(0, 1)).toEqual(['iptables']);
    expect(init.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    expect(init.securityContext.privileged).toBe(false);
    expect(sidecar).toMatchObject({ name: 'meshgate-proxy', restartPolicy: 'Always', startupProbe: { httpGet: { path: '/ready?skip=app', port: 15000 } } });
    expect(sidecar.securityContext).toMatchObject({ runAsUser: 1337, runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    const token = volumes.find((v: any) => v.name === 'meshgate-token');
    expect(token.projected.sources[0].serviceAccountToken).toEqual({ audience: 'meshgate-ca', expirationSeconds: 600, path: 'meshgate-ca-token' });
    const config = sidecarConfigSchema.parse(parse(annotations['meshgate.dev/sidecar-config']));
    expect(config.identity?.tokenFile).toBe('/var/run/secrets/meshgate/tokens/meshgate-ca-token');
    expect(config.workload).toMatchObject({ service: 'web', namespace: 'shop' });
    expect(annotations['meshgate.dev/trust-bundle']).toContain('BEGIN CERTIFICATE');
    expect(annotations['prometheus.io/port']).toBe('15000');
  });

  it.each([
    ['an opted-out pod', pod({ annotations: { 'meshgate.dev/inject': 'false' } }), 'opted out'],
    ['an injected pod', pod({ annotations: { 'meshgate.dev/status': '{}' } }), 'already injected'],
    ['a pod with the sidecar by name', pod({ spec: { initContainers: [{ name: 'meshgate-proxy' }] } }), 'already injected'],
    ['a host-network pod', pod({ spec: { hostNetwork: true } }), 'hostNetwork pod'],
    ['a pod with no containers', { ...pod(), spec: { containers: [] } }, 'no containers'],
  ])('leaves alone %s', (_name, input, reason) => {
    const outcome = injectPod(input, settings);
    expect(outcome.status).toBe('skipped');
    expect((outcome as { reason: string }).reason).toContain(reason);
  });

  it.each([
    ['a probe on the captured app port', pod({ container: { livenessProbe: { httpGet: { port: 8080, path: '/' } } } }), 'container "web" livenessProbe uses port 8080, which the sidecar captures'],
    ['an app running as the proxy uid', pod({ spec: { securityContext: { runAsUser: 1337 } } }), "runs as uid 1337, the sidecar's"],
    ['no service name', pod({ labels: { tier: 'web' } }), 'cannot tell the service'],
    ['a service that is no DNS label', pod({ labels: { app: 'Web_App' } }), 'is not a DNS label'],
    ['a bad inject value', pod({ annotations: { 'meshgate.dev/inject': 'yes' } }), 'expected "true" or "false"'],
    ['a bad port list', pod({ annotations: { 'meshgate.dev/exclude-outbound-ports': '5432,pg' } }), 'meshgate.dev/exclude-outbound-ports: expected comma-separated ports'],
    ['a bad CIDR', pod({ annotations: { 'meshgate.dev/exclude-outbound-cidrs': '10.0.0.0' } }), 'expected comma-separated CIDRs'],
    ['a bad quantity', pod({ annotations: { 'meshgate.dev/proxy-memory': 'lots' } }), 'meshgate.dev/proxy-memory: expected a quantity'],
    ['an unknown named app port', pod({ annotations: { 'meshgate.dev/app-port': 'web' } }), 'meshgate.dev/app-port: expected a port number or the name of a container port'],
    ['an app port the sidecar uses', pod({ container: { ports: [{ containerPort: 15000 }] } }), 'declares port 15000, which the sidecar uses'],
  ])('refuses %s', (_name, input, message) => {
    const outcome = injectPod(input, settings);
    expect(outcome.status).toBe('refused');
    expect((outcome as { message: string }).message).toContain(message);
  });

  it('lets a probe on the app port through once the owner excludes that port from capture', () => {
    const input = pod({ annotations: { 'meshgate.dev/exclude-inbound-ports': '8080' }, container: { readinessProbe: { tcpSocket: { port: 8080 } } } });
    const [init] = injected(injectPod(input, settings)).initContainers;
    expect(init.args).not.toContain('--app-ports');
    expect(init.args.join(' ')).toContain('--exclude-inbound-ports 8080');
  });

  it("keeps the pod's own annotations, volumes and init containers, and its Prometheus annotations when it has them", () => {
    const input = pod({
      annotations: { team: 'payments', 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' },
      spec: { volumes: [{ name: 'data', emptyDir: {} }], initContainers: [{ name: 'migrate', image: 'm:1' }] },
    });
    const { annotations, volumes, initContainers } = injected(injectPod(input, settings));
    expect(annotations).toMatchObject({ team: 'payments', 'prometheus.io/port': '9090' });
    expect(volumes.map((v: any) => v.name)).toEqual(['data', 'meshgate-config', 'meshgate-token', 'meshgate-state']);
    expect(initContainers.map((c: any) => c.name)).toEqual(['meshgate-init', 'meshgate-proxy', 'migrate']);
    expect(input.metadata.annotations).toEqual({ team: 'payments', 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' }); // not modified
  });

  describe('worker processes of the sidecar', () => {
    const workersOf = (annotations: Record<string, string>): number | undefined => {
      const config = parse(injected(injectPod(pod({ annotations }), settings)).annotations['meshgate.dev/sidecar-config']);
      expect(sidecarConfigSchema.safeParse(config).success).toBe(true);
      return config.workers;
    };

    it.each([
      ['the default limits (1 core, 512Mi): one process', {}, undefined],
      ['two cores and the default 512Mi: two workers', { 'meshgate.dev/proxy-cpu-limit': '2' }, 2],
      ['two cores but 256Mi: a primary and two workers would not fit', { 'meshgate.dev/proxy-cpu-limit': '2', 'meshgate.dev/proxy-memory-limit': '256Mi' }, undefined],
      ['2500m and 1Gi: two (whole cores)', { 'meshgate.dev/proxy-cpu-limit': '2500m', 'meshgate.dev/proxy-memory-limit': '1Gi' }, 2],
      ['four cores and 512Mi: as many as the memory holds (three)', { 'meshgate.dev/proxy-cpu-limit': '4' }, 3],
      ['32 cores and 16Gi: at most eight derived', { 'meshgate.dev/proxy-cpu-limit': '32', 'meshgate.dev/proxy-memory-limit': '16Gi' }, 8],
      ['the annotation wins', { 'meshgate.dev/proxy-workers': '3' }, 3],
      ['the annotation may ask for one on a big limit', { 'meshgate.dev/proxy-cpu-limit': '4', 'meshgate.dev/proxy-memory-limit': '2Gi', 'meshgate.dev/proxy-workers': '1' }, undefined],
    ])('%s', (_name, annotations, expected) => {
      expect(workersOf(annotations)).toBe(expected);
    });

    it.each(['0', '65', 'two', '1.5'])('refuses meshgate.dev/proxy-workers %j with the reason', (value) => {
      const outcome = injectPod(pod({ annotations: { 'meshgate.dev/proxy-workers': value } }), settings);
      expect(outcome).toEqual({ status: 'refused', message: `meshgate.dev/proxy-workers: expected a whole number of worker processes from 1 to 64, got ${JSON.stringify(value)}` });
    });
  });

  describe('a Secret for checks of your own (meshgate.dev/filter-secrets)', () => {
    it('mounts the named Secret read-only in the sidecar only, and points userFilters.secretsDir at it', () => {
      const outcome = injectPod(pod({ annotations: { 'meshgate.dev/filter-secrets': 'payments-hmac' } }), settings);
      const { annotations, initContainers, volumes } = injected(outcome);
      expect(volumes.find((v: any) => v.name === 'meshgate-filter-secrets')).toEqual({ name: 'meshgate-filter-secrets', secret: { secretName: 'payments-hmac', defaultMode: 0o444 } });
      const sidecar = initContainers.find((c: any) => c.name === 'meshgate-proxy');
      expect(sidecar.volumeMounts).toContainEqual({ name: 'meshgate-filter-secrets', mountPath: '/var/run/secrets/meshgate/filters', readOnly: true });
      const config = sidecarConfigSchema.parse(parse(annotations['meshgate.dev/sidecar-config']));
      expect(config.userFilters.secretsDir).toBe('/var/run/secrets/meshgate/filters');
      expect(JSON.parse(annotations['meshgate.dev/status']).volumes).toContain('meshgate-filter-secrets');
    });

    it('adds nothing without the annotation', () => {
      const { annotations, volumes } = injected(injectPod(pod(), settings));
      expect(volumes.map((v: any) => v.name)).not.toContain('meshgate-filter-secrets');
      expect(sidecarConfigSchema.parse(parse(annotations['meshgate.dev/sidecar-config'])).userFilters.secretsDir).toBeUndefined();
    });

    it.each(['Payments', '../etc', 'a/b', ''])('refuses %j, which names no Secret', (value) => {
      expect(injectPod(pod({ annotations: { 'meshgate.dev/filter-secrets': value } }), settings)).toEqual({
        status: 'refused',
        message: `meshgate.dev/filter-secrets: expected the name of a Secret in the pod's namespace (a DNS subdomain), got ${JSON.stringify(value)}`,
      });
    });
  });
});
