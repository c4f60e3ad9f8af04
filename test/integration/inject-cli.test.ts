import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { parseIptablesFlags } from '../../src/interception/iptables-flags.ts';
import { meshgateChild } from '../helpers/meshgate-cli.ts';

/*
 * `meshgate inject` as a user runs it: golden files for every workload kind.
 * UPDATE_GOLDEN=1 rewrites the golden file (review the diff before committing it).
 */

const ROOT = join(import.meta.dirname, '../..');
const FIXTURES = join(ROOT, 'test/fixtures/inject');
const CONFIG = join(FIXTURES, 'injector.yaml');

/** The CLI from the repository root (the fixtures' paths are relative to it) unless `cwd`. */
const meshgate = (args: string[], opts: { cwd?: string; input?: string } = {}) => meshgateChild(args, { timeoutMs: 15_000, ...opts, cwd: opts.cwd ?? ROOT });

/** Pod templates of an injected stream, by `Kind/name`. */
function templates(text: string): Map<string, { metadata: Record<string, any>; spec: Record<string, any> }> {
  const out = new Map<string, { metadata: Record<string, any>; spec: Record<string, any> }>();
  for (const doc of parseAllDocuments(text) as unknown as { toJS(): any }[]) {
    const o = doc.toJS();
    if (!o?.kind) continue;
    const t = o.kind === 'Pod' ? o : o.kind === 'CronJob' ? o.spec.jobTemplate.spec.template : o.spec?.template;
    if (t) out.set(`${o.kind}/${o.metadata.name}`, t);
  }
  return out;
}

describe('meshgate inject -f (golden files)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-inject-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('adds the sidecar to every workload kind, as in the golden file, and says what it left alone', async () => {
    const { code, stdout, stderr } = await meshgate(['inject', '-f', 'test/fixtures/inject/workloads.yaml', '--config', CONFIG]);
    const lines = stderr.trim().split('\n');
    expect(lines.filter((l) => l.includes('left alone'))).toEqual([
      'test/fixtures/inject/workloads.yaml: document 7 (Pod/legacy): left alone: opted out (meshgate.dev/inject: "false")',
      "test/fixtures/inject/workloads.yaml: document 8 (DaemonSet/node-exporter): left alone: hostNetwork pod: its traffic is the node's, which a sidecar must not capture",
    ]);
    // Every injected workload but orders runs as the default service account.
    expect(lines.filter((l) => l.includes('warning'))).toHaveLength(6);
    expect(lines).toContain(
      'test/fixtures/inject/workloads.yaml: document 0 (Pod/web): warning: service account "default" is not the service\'s name: peers expect spiffe://cluster.local/ns/shop/sa/web (upstream.identity_mismatch otherwise); run it as service account "web"',
    );
    expect(code).toBe(0);
    const goldenFile = join(FIXTURES, 'workloads.golden.yaml');
    if (process.env.UPDATE_GOLDEN) await writeFile(goldenFile, stdout);
    expect(stdout).toBe(await readFile(goldenFile, 'utf8'));
  });

  it('gives each pod a sidecar config the sidecar accepts, derived from its labels, namespace and service account', async () => {
    const golden = templates(await readFile(join(FIXTURES, 'workloads.golden.yaml'), 'utf8'));
    const orders = golden.get('Deployment/orders')!;
    const config = sidecarConfigSchema.parse(parseAllDocuments(orders.metadata.annotations['meshgate.dev/sidecar-config'])[0]!.toJS());
    expect(config.workload).toMatchObject({ service: 'orders', namespace: 'shop', labels: { version: 'v2' } });
    expect(config.identity?.serviceAccount).toBe('orders');
    expect(config.inbound.app).toBe('http://127.0.0.1:8080'); // meshgate.dev/app-port: api, a named port
    // The sidecar first, then the pod's own init containers: they run with the mesh up.
    expect(orders.spec.initContainers.map((c: { name: string }) => c.name)).toEqual(['meshgate-init', 'meshgate-proxy', 'migrate']);
    // Standard label first; no namespace in the document and no -n: default.
    const ledger = sidecarConfigSchema.parse(parseAllDocuments(golden.get('StatefulSet/ledger')!.metadata.annotations['meshgate.dev/sidecar-config'])[0]!.toJS());
    expect(ledger.workload).toMatchObject({ service: 'ledger', namespace: 'default' });
    expect(ledger.identity?.serviceAccount).toBe('default');
    const web = golden.get('Pod/web')!;
    expect(web.metadata.annotations['meshgate.dev/sidecar-config']).toContain('service: web\n');
    expect(golden.get('CronJob/nightly')!.spec.initContainers[1].name).toBe('meshgate-proxy');
  });

  it("writes iptables flags the iptables command parses back to the annotations' values", async () => {
    const golden = templates(await readFile(join(FIXTURES, 'workloads.golden.yaml'), 'utf8'));
    const args = (name: string) => {
      const { spec, mode } = parseIptablesFlags(golden.get(name)!.spec.initContainers[0].args.slice(1));
      return { ...spec, mode };
    };
    expect(args('Pod/web')).toEqual({
      inboundPort: 15006,
      outboundPort: 15001,
      proxyUid: 1337,
      appPorts: [3000],
      excludeInboundPorts: [9090], // the liveness probe's named port
      excludeOutboundPorts: [5432, 6379], // config default + annotation
      excludeOutboundCidrs: ['10.96.0.1/32', '169.254.169.254/32'],
      mode: 'apply',
    });
    expect(args('ReplicaSet/cache').appPorts).toEqual([]); // its only port is excluded by annotation: nothing captured
    expect(args('DaemonSet/agent').appPorts).toEqual([]); // no port: nothing captured inbound
  });

  it('leaves an already injected stream as it is', async () => {
    const golden = await readFile(join(FIXTURES, 'workloads.golden.yaml'), 'utf8');
    const { code, stdout, stderr } = await meshgate(['inject', '-f', '-', '--config', CONFIG], { input: golden });
    expect(code).toBe(0);
    expect(stdout).toBe(golden);
    expect(stderr.match(/left alone: already injected/g)).toHaveLength(7);
  });

  it('prints nothing and exits 1 when one pod cannot be injected safely, naming the document and the fix', async () => {
    const file = join(dir, 'probe.yaml');
    await writeFile(
      file,
      'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: c }\n---\napiVersion: v1\nkind: Pod\nmetadata: { name: api, labels: { app: api } }\n' +
        'spec:\n  containers: [{ name: api, image: api:1, ports: [{ containerPort: 8080 }], readinessProbe: { httpGet: { path: /healthz, port: 8080 } } }]\n',
    );
    const { code, stdout, stderr } = await meshgate(['inject', '-f', file, '--config', CONFIG]);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toContain(`${file}: document 1 (Pod/api): cannot inject: container "api" readinessProbe uses port 8080, which the sidecar captures`);
    expect(stderr).toContain('meshgate.dev/exclude-inbound-ports: "8080"');
  });

  it('without --config reads ./certs/trust-bundle.pem, and says how to make it when it is missing', async () => {
    const { code, stderr } = await meshgate(['inject', '-f', join(ROOT, 'deploy/k8s/samples/orders.yaml')], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toBe('meshgate inject (no --config): cannot read certs/trust-bundle.pem (no such file); run `meshgate certs init` first, or pass --config\n');
  });

  it.each([
    [['inject'], 'meshgate inject: missing -f FILE'],
    [['inject', '-f', 'nope.yaml', '--config', CONFIG], 'meshgate inject: nope.yaml: cannot read file (no such file)'],
    [['inject', '-f', 'test/fixtures/inject/injector.yaml', '--bogus'], "meshgate inject: Unknown option '--bogus'"],
    [['certs', 'webhook', '--dir', 'no-such-certs'], 'meshgate certs webhook: no-such-certs/root-ca.pem: cannot read (no such file; run `meshgate certs init` first)'],
    [['certs', 'webhook', '--service', 'Injector'], 'meshgate certs webhook: --service: expected a DNS label, got "Injector"'],
  ])('%j exits 2 with one line', async (args, line) => {
    const { code, stderr } = await meshgate(args);
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toContain(line);
  });

  it('rejects YAML that does not parse, naming file, line and document', async () => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, 'kind: Pod\n---\nkind: [\n');
    const { code, stderr } = await meshgate(['inject', '-f', file, '--config', CONFIG]);
    expect(code).toBe(2);
    expect(stderr).toMatch(new RegExp(`^${file.replaceAll('/', '\\/')}:\\d+:\\d+ document 1: invalid YAML`));
  });

  it('has --help for both commands', async () => {
    for (const command of ['inject', 'injector']) {
      const { code, stdout } = await meshgate([command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain(`Usage: meshgate ${command}`);
    }
    expect((await meshgate(['--help'])).stdout).toContain('inject -f FILE');
  });
});
