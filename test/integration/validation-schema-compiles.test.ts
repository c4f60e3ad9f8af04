import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Ajv } from 'ajv';
import { request } from 'undici';
import type { MockInstance } from 'vitest';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from './policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig } from './policy-server-harness.ts';

/*
 * What a policy update costs a sidecar that validates bodies: an ajv instance's
 * first compile also compiles the meta-schema (14-44 ms), and each schema
 * compiles in about a millisecond. The sidecar's policy validator and its
 * validate filter share one compiler, so a schema is compiled once, and a
 * snapshot that brings it again compiles nothing.
 */

const selector = { services: ['orders'] };
const ORDERS_BODY = policyYaml('ValidationPolicy', 'orders-body', {
  selector,
  rules: [{ name: 'create', match: { paths: ['/orders'], methods: ['POST'] }, jsonSchema: { type: 'object', required: ['item'], properties: { item: { type: 'string', maxLength: 8 } } } }],
});
const UPLOADS = policyYaml('ValidationPolicy', 'uploads', { selector, rules: [{ name: 'tenant', match: { paths: ['/uploads/*'] }, requiredHeaders: ['x-tenant'] }] });

/** ajv's compile, on the class that defines it: every instance's calls, with the instance each was made on. */
function spyOnAjvCompile(): MockInstance<Ajv['compile']> {
  const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as { Ajv: new () => Ajv };
  let owner = AjvClass.prototype as object;
  while (!Object.hasOwn(owner, 'compile')) owner = Object.getPrototypeOf(owner) as object;
  return vi.spyOn(owner as Ajv, 'compile');
}

describe('JSON Schema compiles of a sidecar that validates bodies', () => {
  let compileSpy: MockInstance<Ajv['compile']>;
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let stateDir: string;
  let sidecar: TestSidecar;
  let serverInstances: Set<unknown>;

  const post = async (p: string, body: string, headers: Record<string, string> = {}) => {
    const res = await request(`${sidecar.inboundUrl}${p}`, { method: 'POST', headers: { host: 'orders.shop', 'content-type': 'application/json', ...headers }, body });
    const text = await res.body.text();
    return { status: res.statusCode, text };
  };
  /** ajv compiles made by the sidecar: the policy server runs in this process too, and compiled before the sidecar started. */
  const sidecarCompiles = () => compileSpy.mock.contexts.filter((instance) => !serverInstances.has(instance)).length;

  beforeAll(async () => {
    compileSpy = spyOnAjvCompile();
    h = await createPolicyHarness();
    await h.write('shop/orders-body.yaml', ORDERS_BODY);
    ps = await h.start();
    serverInstances = new Set(compileSpy.mock.contexts);
    app = await startHttpServer((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-schema-compiles-'));
    sidecar = await startTestSidecar({
      ...(await meshSidecarConfig(h, 'orders', { servers: [ps.address], stateDir })),
      mtls: { mode: 'PERMISSIVE' }, // plaintext callers too: the test calls the inbound port directly
      inbound: { app: app.url, appProtocol: 'http1' },
      authorization: { allowWhenNoPolicy: true },
      log: { level: 'warn', accessLog: false },
    } as Parameters<typeof startTestSidecar>[0]);
    await eventually(async () => (await post('/orders', '{"item":"far-too-long"}')).status, { until: (s) => s === 400, timeoutMs: 10_000, what: 'the pushed ValidationPolicy in force' });
  });
  afterAll(async () => {
    compileSpy?.mockRestore();
    await sidecar?.drain(200);
    await ps?.close().catch(() => {});
    await app?.close();
    await h?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('compiles the schema once for its policy validator and its validate filter, which refuses with it', async () => {
    expect(sidecarCompiles()).toBe(1);
    expect(await post('/orders', '{"item":"ABC-1"}')).toEqual({ status: 200, text: 'ok' });
    const refused = await post('/orders', '{"item":"far-too-long"}');
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.text)).toMatchObject({ code: 'validate.schema', reason: 'JSON body at /item: must NOT have more than 8 characters' });
  });

  it('a new snapshot that brings the same schema again compiles nothing, and the schema still refuses', async () => {
    await h.write('shop/uploads.yaml', UPLOADS);
    await eventually(async () => (await post('/uploads/a', '{}')).status, { until: (s) => s === 400, timeoutMs: 10_000, what: 'the second snapshot in force' });
    expect(sidecarCompiles()).toBe(1);
    expect((await post('/orders', '{"item":"far-too-long"}')).status).toBe(400);
    expect((await post('/orders', '{"item":"ABC-1"}')).status).toBe(200);
  });
});
