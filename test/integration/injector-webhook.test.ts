import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCertsInit } from '../../src/ca/certs-init.ts';
import { writeWebhookCert } from '../../src/ca/webhook-cert.ts';
import { systemClock } from '../../src/core/clock.ts';
import { loadInjector } from '../../src/inject/settings.ts';
import type { InjectorServer } from '../../src/inject/webhook-server.ts';
import { createInjectorServer } from '../../src/inject/webhook-server.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { k8sProblems } from '../helpers/k8s-schema.ts';
import { freePort } from '../helpers/process.ts';
import { parsePrometheusText } from '../helpers/prom-text.ts';

/*
 * The admission webhook over real HTTPS, with AdmissionReview documents shaped
 * as the API server sends them, and a client that checks the serving
 * certificate against the caBundle the way the API server does (the Service
 * DNS name, the trust bundle of `meshgate certs init`).
 */

const SERVICE_NAME = 'meshgate-injector.meshgate-system.svc';
const FIXTURE = join(import.meta.dirname, '../fixtures/inject/admission-review-pod.json');

type Review = { apiVersion: string; kind: string; response: { uid: string; allowed: boolean; patchType?: string; patch?: string; status?: { code: number; message: string } } };

/** RFC 6902 `add` (the only op the injector sends), applied as the API server would. */
function applyPatch(document: any, ops: { op: string; path: string; value: unknown }[]): any {
  const doc = structuredClone(document);
  for (const op of ops) {
    expect(op.op).toBe('add');
    const keys = op.path
      .split('/')
      .slice(1)
      .map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
    let parent = doc;
    for (const key of keys.slice(0, -1)) {
      expect(parent[key], `parent of ${op.path} exists`).toBeTypeOf('object');
      parent = parent[key];
    }
    parent[keys.at(-1)!] = op.value;
  }
  return doc;
}

describe('meshgate injector (admission webhook over HTTPS)', () => {
  let dir: string;
  let server: InjectorServer;
  let url: string;
  let dispatcher: Agent;
  let template: any;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-injector-'));
    await writeCertsInit({ outDir: dir, trustDomain: 'cluster.local', keyType: 'ecdsa-p256', intermediate: true, rootTtlMs: 86_400_000, force: false, clock: systemClock });
    await writeWebhookCert({ dir, service: 'meshgate-injector', namespace: 'meshgate-system', ttlMs: 3_600_000, force: false, clock: systemClock });
    await writeFile(
      join(dir, 'injector.yaml'),
      'listen: { address: 127.0.0.1, port: 0 }\ntls: { certFile: injector.pem, keyFile: injector.key }\nmesh: { trustBundleFile: trust-bundle.pem }\nlog: { level: silent }\n',
    );
    const { settings } = await loadInjector(join(dir, 'injector.yaml'));
    server = createInjectorServer({
      settings,
      tls: { cert: await readFile(join(dir, 'injector.pem'), 'utf8'), key: await readFile(join(dir, 'injector.key'), 'utf8') },
      logger: createLogger({ level: 'silent', name: 'injector' }),
      clock: systemClock,
    });
    const address = await server.listen(0, '127.0.0.1');
    url = `https://127.0.0.1:${address.port}`;
    // As the API server: trust only the caBundle, check the Service name.
    dispatcher = new Agent({ connect: { ca: await readFile(join(dir, 'trust-bundle.pem'), 'utf8'), servername: SERVICE_NAME } });
    template = JSON.parse(await readFile(FIXTURE, 'utf8'));
  });
  afterAll(async () => {
    await dispatcher?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function post(body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) {
    const res = await request(`${url}/inject`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers, dispatcher });
    return { status: res.statusCode, headers: res.headers, body: (await res.body.json()) as any };
  }

  function review(mutate: (request: any) => void = () => {}) {
    const copy = structuredClone(template);
    mutate(copy.request);
    return copy;
  }

  it("answers a Deployment's pod with a JSON Patch that yields a valid pod with the sidecar", async () => {
    const { status, body } = await post(review());
    expect(status).toBe(200);
    const reply = body as Review;
    expect(reply).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: template.request.uid, allowed: true, patchType: 'JSONPatch' } });
    const pod = applyPatch(template.request.object, JSON.parse(Buffer.from(reply.response.patch!, 'base64').toString('utf8')));
    expect(pod.spec.initContainers.map((c: { name: string }) => c.name)).toEqual(['meshgate-init', 'meshgate-proxy']);
    expect(pod.spec.containers).toEqual(template.request.object.spec.containers); // the app container is untouched
    expect(pod.spec.volumes.map((v: { name: string }) => v.name)).toEqual(['kube-api-access-x7k2p', 'meshgate-config', 'meshgate-token', 'meshgate-state']);
    // The namespace comes from the request (a pod of a Deployment has no name yet), the service account from the spec.
    const config = pod.metadata.annotations['meshgate.dev/sidecar-config'] as string;
    expect(config).toContain('namespace: shop\n');
    expect(config).toContain('serviceAccount: orders\n');
    expect(pod.spec.initContainers[0].args.join(' ')).toContain('--app-ports 8080 --exclude-inbound-ports 8081');
    expect(await k8sProblems(pod)).toEqual([]);
  });

  it("warns the pod's creator when its service account is not named like its service", async () => {
    const { body } = await post(review((r) => (r.object.spec.serviceAccountName = 'default')));
    const response = (body as Review & { response: { warnings?: string[] } }).response;
    expect(response.allowed).toBe(true);
    expect(response.warnings).toEqual([
      'meshgate: service account "default" is not the service\'s name: peers expect spiffe://cluster.local/ns/shop/sa/orders (upstream.identity_mismatch otherwise); run it as service account "orders"',
    ]);
    expect((await post(review())).body.response.warnings).toBeUndefined();
  });

  it('answers a dry run exactly like the real request (no side effects), counted apart', async () => {
    const real = (await post(review())).body as Review;
    const dry = (await post(review((r) => (r.dryRun = true)))).body as Review;
    expect(dry.response.patch).toBe(real.response.patch);
    const reviews = parsePrometheusText(await server.registry.metrics()).get('meshgate_injector_reviews_total')!;
    expect(reviews.samples.find((s) => s.labels.result === 'injected' && s.labels.dry_run === 'true')?.value).toBe(1);
  });

  it.each([
    ['a pod with no containers', (r: any) => (r.object.spec.containers = [])],
    ['a pod with no spec at all', (r: any) => delete r.object.spec],
    ['an opted-out pod', (r: any) => (r.object.metadata.annotations = { 'meshgate.dev/inject': 'false' })],
    ['an already injected pod', (r: any) => (r.object.metadata.annotations = { 'meshgate.dev/status': '{}' })],
    ['an UPDATE', (r: any) => (r.operation = 'UPDATE')],
    ['a pod subresource', (r: any) => (r.subResource = 'ephemeralcontainers')],
    ['another kind', (r: any) => (r.kind = { group: 'apps', version: 'v1', kind: 'Deployment' })],
  ])('allows %s without a patch', async (_name, mutate) => {
    const { status, body } = await post(review(mutate));
    expect(status).toBe(200);
    expect((body as Review).response).toEqual({ uid: template.request.uid, allowed: true });
  });

  it('refuses a pod it cannot inject safely, with a message kubectl shows', async () => {
    const { body } = await post(
      review((r) => {
        r.object.spec.containers[0].livenessProbe = { httpGet: { path: '/', port: 'http' } };
      }),
    );
    const response = (body as Review).response;
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(400);
    expect(response.status?.message).toContain('meshgate: container "orders" livenessProbe uses port 8080, which the sidecar captures');
  });

  it.each([
    ['a body that is not JSON', '{"kind":', { 'content-type': 'application/json' }, 400, 'body is not JSON'],
    ['another content type', '{}', { 'content-type': 'text/plain' }, 415, 'expected content-type application/json'],
    [
      'an AdmissionReview v1beta1',
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }),
      { 'content-type': 'application/json' },
      400,
      'expected an AdmissionReview of apiVersion admission.k8s.io/v1',
    ],
    ['a review without uid', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} }), { 'content-type': 'application/json' }, 400, 'request.uid: missing'],
    [
      'a CREATE without the object',
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u', operation: 'CREATE', kind: { kind: 'Pod' }, resource: { resource: 'pods' } } }),
      { 'content-type': 'application/json' },
      400,
      'request.object: missing',
    ],
  ])('answers %s with a 4xx {code, reason}', async (_name, body, headers, status, reason) => {
    const res = await post(body, headers);
    expect(res.status).toBe(status);
    expect(res.headers['x-meshgate-reason']).toBe('request.malformed');
    expect(res.body.code).toBe('request.malformed');
    expect(res.body.reason).toContain(reason);
  });

  it('answers 413 to a review larger than the API server ever sends', async () => {
    const res = await post(JSON.stringify({ pad: 'x'.repeat(5 * 1024 * 1024) }));
    expect(res.status).toBe(413);
    expect(res.body.code).toBe('request.body_too_large');
  });

  it('serves /ready and /metrics, and refuses plain HTTP', async () => {
    const ready = await request(`${url}/ready`, { dispatcher });
    expect(ready.statusCode).toBe(200);
    await ready.body.dump();
    const get = await request(`${url}/inject`, { dispatcher });
    expect(get.statusCode).toBe(405);
    await get.body.dump();
    await expect(request(url.replace('https:', 'http:'), { headersTimeout: 2000 }).then((r) => r.body.dump())).rejects.toThrow();
  });
});

describe('meshgate injector: certificate renewal', () => {
  it('serves a renewed certificate once its files change, without a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-injector-renew-'));
    const writes: string[] = [];
    let onLine: (line: string) => void = () => {};
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
          writes.push(line);
          onLine(line);
        }
        done();
      },
    });
    await writeCertsInit({ outDir: dir, trustDomain: 'cluster.local', keyType: 'ecdsa-p256', intermediate: false, rootTtlMs: 86_400_000, force: false, clock: systemClock });
    const issue = () => writeWebhookCert({ dir, service: 'meshgate-injector', namespace: 'meshgate-system', ttlMs: 3_600_000, force: true, clock: systemClock });
    await issue();
    await writeFile(join(dir, 'injector.yaml'), 'mesh: { trustBundleFile: trust-bundle.pem }\n');
    const files = { certFile: join(dir, 'injector.pem'), keyFile: join(dir, 'injector.key') };
    const server = createInjectorServer({
      settings: (await loadInjector(join(dir, 'injector.yaml'))).settings,
      tls: { cert: await readFile(files.certFile, 'utf8'), key: await readFile(files.keyFile, 'utf8') },
      reloadFrom: files,
      logger: createLogger({ level: 'info', name: 'injector', destination: sink }),
      clock: systemClock,
    });
    const { port } = await server.listen(0, '127.0.0.1');
    const servedSerial = async () => {
      const ca = await readFile(join(dir, 'trust-bundle.pem'), 'utf8');
      return new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: SERVICE_NAME }, () => {
          resolve(socket.getPeerCertificate().serialNumber);
          socket.end();
        });
        socket.once('error', reject);
      });
    };
    try {
      const before = await servedSerial();
      const reloaded = new Promise<void>((resolve) => (onLine = (line) => line.includes('injector certificate reloaded') && resolve()));
      await issue();
      await reloaded;
      const after = await servedSerial();
      expect(after).not.toBe(before);
      expect(after).toBe(new X509Certificate(await readFile(files.certFile, 'utf8')).serialNumber);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('meshgate injector (the command)', () => {
  it('starts from its config, answers over HTTPS, and exits 0 on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-injector-cli-'));
    try {
      await writeCertsInit({ outDir: dir, trustDomain: 'cluster.local', keyType: 'ecdsa-p256', intermediate: false, rootTtlMs: 86_400_000, force: false, clock: systemClock });
      await writeWebhookCert({ dir, service: 'meshgate-injector', namespace: 'meshgate-system', ttlMs: 3_600_000, force: false, clock: systemClock });
      const port = await freePort();
      await writeFile(
        join(dir, 'injector.yaml'),
        `listen: { address: 127.0.0.1, port: ${port} }\ntls: { certFile: injector.pem, keyFile: injector.key }\nmesh: { trustBundleFile: trust-bundle.pem }\n`,
      );
      const child = spawn(process.execPath, [join(import.meta.dirname, '../../bin/meshgate.js'), 'injector', '--config', join(dir, 'injector.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.setEncoding('utf8');
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: string) => {
          stdout += chunk;
          if (stdout.includes('injector listening')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`exited ${code} before listening: ${stdout}`)));
      });
      const dispatcher = new Agent({ connect: { ca: await readFile(join(dir, 'trust-bundle.pem'), 'utf8'), servername: SERVICE_NAME } });
      const res = await request(`https://127.0.0.1:${port}/ready`, { dispatcher });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      await dispatcher.close();
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('exits 2 with one line when the config has no tls section', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-injector-cli-'));
    try {
      await writeFile(join(dir, 'trust-bundle.pem'), await readFile(join(import.meta.dirname, '../fixtures/inject/trust-bundle.pem'), 'utf8'));
      await writeFile(join(dir, 'injector.yaml'), 'mesh: { trustBundleFile: trust-bundle.pem }\n');
      const child = spawn(process.execPath, [join(import.meta.dirname, '../../bin/meshgate.js'), 'injector', '--config', join(dir, 'injector.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const [code] = await once(child, 'exit');
      expect(code).toBe(2);
      expect(stderr).toBe(`${join(dir, 'injector.yaml')}: tls: missing required field (the webhook serves HTTPS: certFile and keyFile)\n`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
