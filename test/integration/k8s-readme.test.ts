import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { expectedInjectorConfigReference, readInjectorConfigReference } from '../../scripts/injector-config-reference.ts';
import { k8sProblems } from '../helpers/k8s-schema.ts';
import type { K8sObject } from '../helpers/kustomize.ts';
import { readYamlObjects, renderKustomization } from '../helpers/kustomize.ts';

/*
 * The README's "Run it in Kubernetes" walk-through, as far as it runs without
 * a cluster: every `meshgate` line runs (in a scratch folder, as a user would
 * from a clone), and every file, object and container the `kubectl`, `docker`
 * and `kind` lines name must exist. A new kind of command in the section fails
 * the test until it is covered here.
 */

const execFileP = promisify(execFile);
const ROOT = path.join(import.meta.dirname, '../..');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

function section(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  expect(start, `README has no "## ${title}"`).toBeGreaterThan(0);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

const commands = [...section('Run it in Kubernetes').matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) =>
  m[1]!
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter(Boolean),
);

const objects: K8sObject[] = [
  ...renderKustomization(path.join(ROOT, 'deploy/k8s/base')),
  ...['orders.yaml', 'frontend.yaml', 'policies.yaml'].flatMap((f) => readYamlObjects(path.join(ROOT, 'deploy/k8s/samples', f))),
];

describe('README: Run it in Kubernetes', () => {
  let dir: string;
  const outputs = new Map<string, string>();

  beforeAll(async () => {
    // A scratch clone: the repository's deploy/ and Dockerfile, a fresh ./certs.
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-readme-k8s-'));
    await symlink(path.join(ROOT, 'deploy'), path.join(dir, 'deploy'));
    await symlink(path.join(ROOT, 'Dockerfile'), path.join(dir, 'Dockerfile'));
    for (const line of commands.filter((c) => c.startsWith('meshgate '))) {
      const { stdout } = await execFileP(process.execPath, [path.join(ROOT, 'bin/meshgate.js'), ...line.split(/\s+/).slice(1)], { cwd: dir, timeout: 30_000, maxBuffer: 8 * 1024 * 1024 });
      outputs.set(line, stdout);
    }
  }, 120_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('has the commands of the walk-through, each of a kind this test covers', () => {
    expect(commands).toContain('alias meshgate="node_modules/.bin/node bin/meshgate.js"');
    expect(commands.filter((c) => c.startsWith('meshgate '))).toEqual(['meshgate certs init', 'meshgate certs webhook', 'meshgate inject -n shop -f deploy/k8s/samples/orders.yaml']);
    for (const c of commands) expect(c, c).toMatch(/^(alias meshgate=|meshgate |kubectl |docker build |kind load docker-image )/);
  });

  it('meshgate certs init and certs webhook write into ./certs what the kubectl lines read', () => {
    for (const c of commands.filter((c) => c.startsWith('kubectl '))) {
      const files = [...c.matchAll(/(?:--from-file=[\w.-]+=|--cert=|--key=|base64 -w0 |(?:^|\s)-[fk] )([\w./-]+)/g)].map((m) => m[1]!);
      for (const file of files) expect(existsSync(path.join(dir, file)), `${c}: ${file}`).toBe(true);
    }
    expect(outputs.get('meshgate certs init')).toContain('wrote certs/root-ca.key');
  });

  it('meshgate inject prints the sample with its sidecar, valid for the API server', async () => {
    const docs = parseAllDocuments(outputs.get('meshgate inject -n shop -f deploy/k8s/samples/orders.yaml')!).map((d) => d.toJS() as K8sObject);
    expect(docs.map((d) => d.kind)).toEqual(['ServiceAccount', 'Service', 'Deployment']);
    for (const doc of docs) expect(await k8sProblems(doc)).toEqual([]);
    const pod = docs[2]!.spec.template;
    expect(pod.spec.initContainers.map((c: { name: string }) => c.name)).toEqual(['meshgate-init', 'meshgate-proxy']);
    expect(pod.metadata.annotations['meshgate.dev/sidecar-config']).toContain('namespace: shop\n');
    expect(pod.metadata.annotations['meshgate.dev/trust-bundle']).toBe(readFileSync(path.join(dir, 'certs/trust-bundle.pem'), 'utf8'));
  });

  it('names objects and containers that exist in deploy/k8s', () => {
    let named = 0;
    for (const c of commands.filter((c) => c.startsWith('kubectl '))) {
      for (const m of c.matchAll(/(?<=\s)(deploy|svc|mutatingwebhookconfiguration)[/ ]([a-z0-9-]+)(?![/\w.-])/g)) {
        const kind = { deploy: 'Deployment', svc: 'Service', mutatingwebhookconfiguration: 'MutatingWebhookConfiguration' }[m[1] as 'deploy'];
        const object = objects.find((o) => o.kind === kind && o.metadata.name === m[2]);
        named++;
        expect(object, `${c}: ${kind} ${m[2]}`).toBeDefined();
        const container = / -c ([a-z0-9-]+)/.exec(c)?.[1];
        if (container && kind === 'Deployment') expect(object!.spec.template.spec.containers.map((x: { name: string }) => x.name)).toContain(container);
      }
    }
    expect(named).toBeGreaterThanOrEqual(6); // the patch, the rollout, the logs, the port-forward
  });

  it('builds the image the manifests run, on Node 24 as uid 1337, with iptables for the init container', () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const nodeMajor = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies: { node: string } }).devDependencies.node.replace(/^\D*/, '').split('.')[0];
    expect(dockerfile).toMatch(new RegExp(`^ARG NODE_IMAGE=node:${nodeMajor}-`, 'm'));
    expect(dockerfile).toMatch(/^USER 1337:1337$/m);
    expect(dockerfile).toMatch(/apt-get install -y --no-install-recommends iptables/);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "bin\/meshgate.js"\]$/m);
    const build = commands.find((c) => c.startsWith('docker build '))!;
    const tag = /-t (\S+)/.exec(build)![1]!;
    expect(commands).toContain(`kind load docker-image ${tag}`);
    const images = objects.filter((o) => o.kind === 'Deployment').flatMap((d) => d.spec.template.spec.containers.map((c: { image: string }) => c.image));
    expect(images).toContain(tag);
  });

  it('has the injector configuration reference the schema generates', () => {
    expect(readInjectorConfigReference(README), 'README.md injector configuration reference is stale: run `node_modules/.bin/node scripts/injector-config-reference.ts`').toBe(
      expectedInjectorConfigReference(),
    );
  });
});
