import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { injectorConfigSchema } from '../../src/config/injector-schema.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { policyServerConfigSchema } from '../../src/config/policy-server-schema.ts';
import { DEFAULT_INJECTOR_CONFIG } from '../../src/inject/settings.ts';
import { parsePolicyText } from '../../src/policy/parse-documents.ts';
import { k8sProblems } from '../helpers/k8s-schema.ts';
import type { K8sObject } from '../helpers/kustomize.ts';
import { readYamlObjects, renderKustomization } from '../helpers/kustomize.ts';

/*
 * deploy/k8s as the API server would see it: the base and the production
 * overlay rendered by a small kustomize (test/helpers/kustomize.ts), every
 * object checked against the Kubernetes API schemas (kubernetes-models, plus
 * unknown fields), every meshgate config file in a ConfigMap against its own
 * schema, and the references between objects resolved.
 */

const K8S = path.join(import.meta.dirname, '../../deploy/k8s');
/** Made by hand from certs/ before the first apply (README, "Run it in Kubernetes"), or applied as policy. */
const MADE_BY_HAND = { ConfigMap: ['meshgate-trust-bundle', 'meshgate-policies'], Secret: ['meshgate-ca-signing', 'meshgate-injector-tls'] };

const renders: Array<[string, K8sObject[]]> = [
  ['base', renderKustomization(path.join(K8S, 'base'))],
  ['overlays/production', renderKustomization(path.join(K8S, 'overlays/production'))],
];

const find = (objects: K8sObject[], kind: string, name: string): K8sObject | undefined => objects.find((o) => o.kind === kind && o.metadata.name === name);
const podSpecs = (objects: K8sObject[]) =>
  objects.filter((o) => o.kind === 'Deployment').map((d) => ({ deployment: d, spec: d.spec.template.spec, labels: d.spec.template.metadata.labels as Record<string, string> }));
const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);

describe.each(renders)('deploy/k8s/%s', (_name, objects) => {
  it('is accepted by the Kubernetes API schemas, object by object', async () => {
    expect(objects.length).toBeGreaterThan(20);
    const problems = (await Promise.all(objects.map((o) => k8sProblems(o)))).flat();
    expect(problems).toEqual([]);
  });

  it("has the meshgate roles each role config file describes, valid by meshgate's own schemas", () => {
    const config = (name: string, key: string) => find(objects, 'ConfigMap', name)!.data[key] as string;
    const ca = parseConfigText(config('meshgate-ca-config', 'ca.yaml'), 'ca.yaml', caConfigSchema);
    expect(ca.tokens).toMatchObject({ audiences: ['meshgate-ca'], jwksUri: 'https://kubernetes.default.svc/openid/v1/jwks', jwksTokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' });
    const ps = parseConfigText(config('meshgate-policy-server-config', 'policy-server.yaml'), 'policy-server.yaml', policyServerConfigSchema);
    expect(ps.identity.serviceAccount).toBe(find(objects, 'Deployment', 'meshgate-policy-server')!.spec.template.spec.serviceAccountName);
    // Replicas in separate pods share no disk (#17): registry and admin writes in the mesh's Redis, the folder a ConfigMap.
    expect(ps.store).toBe('redis');
    const policyServerPod = find(objects, 'Deployment', 'meshgate-policy-server')!.spec.template.spec;
    expect(policyServerPod.volumes.filter((v: { persistentVolumeClaim?: unknown }) => v.persistentVolumeClaim)).toEqual([]);
    expect(policyServerPod.volumes.find((v: { name: string }) => v.name === 'policies').configMap.name).toBe('meshgate-policies');
    const injector = parseConfigText(config('meshgate-injector-config', 'injector.yaml'), 'injector.yaml', injectorConfigSchema);
    expect(injector.listen.port).toBe(15017);
    // Every address a sidecar is given names a Service of this rendering, on a port it serves.
    for (const address of [
      injector.mesh.ca.address,
      ...injector.mesh.policyServers,
      new URL(injector.mesh.redisUrl!).host,
      new URL(ps.redis!.url).host,
      new URL(injector.mesh.tracing!.endpoint!).host,
    ]) {
      const [host, port] = address.split(':');
      const service = find(objects, 'Service', host!.split('.')[0]!);
      expect(service, address).toBeDefined();
      expect(
        service!.spec.ports.map((p: { port: number }) => p.port),
        address,
      ).toContain(Number(port));
    }
  });

  it('starts every role with a config file its pod mounts', () => {
    for (const { deployment, spec } of podSpecs(objects)) {
      for (const c of spec.containers) {
        const at = (c.args ?? []).indexOf('--config');
        if (at < 0) continue;
        const file = c.args[at + 1] as string;
        const mount = c.volumeMounts.find((m: { mountPath: string }) => file.startsWith(`${m.mountPath}/`));
        expect(mount, `${deployment.metadata.name}: ${file} is on no volume`).toBeDefined();
        const volume = spec.volumes.find((v: { name: string }) => v.name === mount.name);
        expect(find(objects, 'ConfigMap', volume.configMap.name)!.data[path.basename(file)], `${deployment.metadata.name}: ${file}`).toBeTypeOf('string');
      }
    }
  });

  it("resolves every reference: volumes, service accounts, Service and PDB selectors, the webhook's Service", () => {
    for (const { deployment, spec, labels } of podSpecs(objects)) {
      const name = deployment.metadata.name;
      for (const v of spec.volumes ?? []) {
        if (v.configMap) expect(find(objects, 'ConfigMap', v.configMap.name) ?? MADE_BY_HAND.ConfigMap.includes(v.configMap.name), `${name}: ConfigMap ${v.configMap.name}`).toBeTruthy();
        if (v.secret) expect(MADE_BY_HAND.Secret, `${name}: Secret ${v.secret.secretName}`).toContain(v.secret.secretName);
        if (v.persistentVolumeClaim) expect(find(objects, 'PersistentVolumeClaim', v.persistentVolumeClaim.claimName), `${name}: claim`).toBeDefined();
      }
      if (spec.serviceAccountName) expect(find(objects, 'ServiceAccount', spec.serviceAccountName), `${name}: service account`).toBeDefined();
      expect(
        objects.some((o) => o.kind === 'PodDisruptionBudget' && selects(o.spec.selector.matchLabels, labels)),
        `${name}: no PodDisruptionBudget`,
      ).toBe(true);
      expect(selects(deployment.spec.selector.matchLabels, labels), `${name}: selector`).toBe(true);
    }
    for (const service of objects.filter((o) => o.kind === 'Service')) {
      const pods = podSpecs(objects).filter((p) => selects(service.spec.selector, p.labels));
      expect(pods, `Service ${service.metadata.name} selects no pod`).toHaveLength(1);
      const portNames = pods[0]!.spec.containers.flatMap((c: { ports?: { name: string }[] }) => (c.ports ?? []).map((p) => p.name));
      for (const p of service.spec.ports) expect(portNames, `Service ${service.metadata.name} port ${p.name}`).toContain(p.targetPort);
    }
    const webhook = find(objects, 'MutatingWebhookConfiguration', 'meshgate-injector')!.webhooks[0];
    const target = find(objects, 'Service', webhook.clientConfig.service.name)!;
    expect(target.metadata.namespace).toBe(webhook.clientConfig.service.namespace);
    expect(target.spec.ports.map((p: { port: number }) => p.port)).toContain(webhook.clientConfig.service.port);
  });

  it("states the webhook's failure policy and selects meshed namespaces only", () => {
    const webhook = find(objects, 'MutatingWebhookConfiguration', 'meshgate-injector')!.webhooks[0];
    expect(webhook).toMatchObject({ failurePolicy: 'Fail', sideEffects: 'None', admissionReviewVersions: ['v1'], clientConfig: { service: { path: '/inject' } } });
    expect(webhook.namespaceSelector.matchLabels).toEqual({ 'meshgate.dev/inject': 'enabled' });
    expect(webhook.rules).toEqual([{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }]);
  });

  it("grants least privilege: one ClusterRole (read the cluster's JWKS), no API token for anything else, non-root read-only containers", () => {
    const roles = objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role');
    expect(roles.map((r) => r.rules)).toEqual([[{ nonResourceURLs: ['/openid/v1/jwks', '/.well-known/openid-configuration'], verbs: ['get'] }]]);
    const binding = objects.find((o) => o.kind === 'ClusterRoleBinding')!;
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'meshgate-ca', namespace: 'meshgate-system' }]);
    for (const { deployment, spec } of podSpecs(objects)) {
      if (spec.serviceAccountName !== 'meshgate-ca') expect(spec.automountServiceAccountToken, deployment.metadata.name).toBe(false);
      expect(spec.securityContext.runAsNonRoot, deployment.metadata.name).toBe(true);
      for (const c of spec.containers) {
        expect(c.securityContext, `${deployment.metadata.name}/${c.name}`).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
        expect(c.resources.limits.memory, `${deployment.metadata.name}/${c.name}`).toBeDefined();
      }
    }
  });

  it('runs two policy servers, Redis, Jaeger taking OTLP on 4317, and asks Prometheus to scrape the meshgate roles', () => {
    expect(find(objects, 'Deployment', 'meshgate-policy-server')!.spec.replicas).toBe(2);
    expect(find(objects, 'Deployment', 'meshgate-redis')).toBeDefined();
    expect(find(objects, 'Service', 'jaeger-collector')!.spec.ports.find((p: { name: string }) => p.name === 'otlp-grpc').port).toBe(4317);
    for (const name of ['meshgate-ca', 'meshgate-policy-server', 'meshgate-injector']) {
      expect(find(objects, 'Deployment', name)!.spec.template.metadata.annotations['prometheus.io/scrape'], name).toBe('true');
    }
  });
});

describe('deploy/k8s/overlays/production', () => {
  const objects = renders[1]![1];
  it('changes what production needs: images, injector config, replicas, Redis on a storage class, system namespaces excluded', () => {
    const images = objects.filter((o) => o.kind === 'Deployment').flatMap((d) => d.spec.template.spec.containers.map((c: { image: string }) => c.image));
    expect(images.filter((i) => i.includes('meshgate'))).toEqual(Array(3).fill('registry.example.com/platform/meshgate:0.1.0'));
    const injector = parseConfigText(find(objects, 'ConfigMap', 'meshgate-injector-config')!.data['injector.yaml'], 'injector.yaml', injectorConfigSchema);
    expect(injector.sidecar.image).toBe('registry.example.com/platform/meshgate:0.1.0');
    expect(find(objects, 'Deployment', 'meshgate-ca')!.spec.replicas).toBe(2);
    expect(find(objects, 'PersistentVolumeClaim', 'meshgate-policy-registry')).toBeUndefined();
    expect(find(objects, 'PersistentVolumeClaim', 'meshgate-redis-data')!.spec).toMatchObject({ accessModes: ['ReadWriteOnce'], storageClassName: 'standard' });
    const selector = find(objects, 'MutatingWebhookConfiguration', 'meshgate-injector')!.webhooks[0].namespaceSelector;
    expect(selector.matchExpressions[0].values).toContain('kube-system');
    expect(selector.matchLabels).toEqual({ 'meshgate.dev/inject': 'enabled' });
    // The merge kept the containers' other fields.
    expect(find(objects, 'Deployment', 'meshgate-injector')!.spec.template.spec.containers[0].args).toEqual(['injector', '--config', '/etc/meshgate/config/injector.yaml']);
  });
});

describe('deploy/k8s/samples', () => {
  it('are valid Kubernetes objects, and the policies valid meshgate policy documents', async () => {
    const objects = ['orders.yaml', 'frontend.yaml', 'policies.yaml'].flatMap((f) => readYamlObjects(path.join(K8S, 'samples', f)));
    expect((await Promise.all(objects.map((o) => k8sProblems(o)))).flat()).toEqual([]);
    const policies = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'meshgate-policies')!;
    for (const [key, text] of Object.entries(policies.data as Record<string, string>)) {
      const parsed = parsePolicyText(text, key);
      expect(parsed.errors, key).toEqual([]);
      expect(parsed.documents).toHaveLength(1);
    }
  });
});

describe('meshgate inject without --config', () => {
  it('injects what the webhook of deploy/k8s/base injects', () => {
    const base = parseConfigText(find(renders[0]![1], 'ConfigMap', 'meshgate-injector-config')!.data['injector.yaml'], 'injector.yaml', injectorConfigSchema);
    const cli = injectorConfigSchema.parse(DEFAULT_INJECTOR_CONFIG);
    const { tls: _tls, ...fromBase } = base;
    expect({ ...cli, mesh: { ...cli.mesh, trustBundleFile: '-' } }).toEqual({ ...fromBase, mesh: { ...fromBase.mesh, trustBundleFile: '-' } });
  });
});
