import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { allowFrontendCalls, startMesh } from '../helpers/mesh.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

/*
 * Checks of your own end to end: frontend -> orders over mutual TLS, the
 * Filter documents (examples of deploy/examples/filters, their sources as
 * files of the policy folder) pushed by a real policy server. Then a hostile
 * check is pushed: each of its attacks is contained, the call gets the
 * failure mode, and orders' sidecar keeps answering /ready and other calls.
 */

const EXAMPLES = path.resolve(import.meta.dirname, '../../deploy/examples/filters');

const HOSTILE = `export default function check(call) {
  switch (call.path) {
    case '/hostile/loop': for (;;) {}
    case '/hostile/memory': { const kept = []; for (;;) kept.push(new Uint8Array(1024 * 1024)); }
    case '/hostile/gigabyte': return { allow: new ArrayBuffer(1024 * 1024 * 1024).byteLength > 0 };
    case '/hostile/reach': return typeof process === 'undefined' && typeof require === 'undefined' && typeof fetch === 'undefined' ? { deny: { code: 'nothing_to_reach' } } : { allow: true };
    case '/hostile/pollute': Object.prototype.allow = true; Object.prototype.polluted = 1; return {};
    default: return { allow: true };
  }
}`;

/** Denies /route/echo with the route it sees as the reason: what the caller's sidecar told orders'. */
const ROUTE_ECHO = `export default (call) => call.path === '/route/echo' ? { deny: { code: 'route_seen', reason: JSON.stringify(call.route) } } : { allow: true };`;

describe('checks of your own through two sidecars', () => {
  let mesh: Mesh;
  beforeAll(async () => {
    mesh = await startMesh({
      policies: { 'shop/allow.yaml': allowFrontendCalls },
      prepare: async (h) => {
        // The examples' sources as files of the policy folder, their documents naming them.
        for (const name of ['api-key-denylist', 'canary']) {
          await h.write(`${name}.ts`, await readFile(path.join(EXAMPLES, `${name}.ts`), 'utf8'));
          await h.write(`shop/${name}.yaml`, await readFile(path.join(EXAMPLES, `${name}.yaml`), 'utf8'));
        }
      },
    });
  }, 60_000);
  afterAll(async () => {
    await mesh?.close();
  });

  it('enforces the examples: a revoked API key is denied with the status, document and code the check chose, a canary user is tagged for the app', async () => {
    const denied = await mesh.call('/orders/1', { headers: { 'x-api-key': 'ak_live_7Hq2secretsecret' } });
    expect(denied.status).toBe(401);
    expect(denied.headers['x-meshgate-reason']).toBe('filter.denied');
    expect(JSON.parse(denied.text)).toMatchObject({ code: 'filter.denied', rule: 'shop/revoked-api-keys#api_key_revoked', reason: 'this API key was revoked' });
    const tagged = await mesh.call('/orders/1', { headers: { 'x-canary-opt-in': '1' } });
    expect(tagged.status).toBe(200);
    expect(JSON.parse(tagged.text).headers['x-canary']).toBe('1');
    const forged = await mesh.call('/orders/1', { headers: { 'x-canary': '1' } });
    expect(JSON.parse(forged.text).headers['x-canary']).toBeUndefined();
  });

  it("shows a check the route frontend's sidecar matched, never one the app claims, and keeps the header from orders' app", async () => {
    await mesh.h.write('shop/route-echo.yaml', policyYaml('Filter', 'route-echo', { selector: { services: ['orders'] }, source: ROUTE_ECHO }));
    const seen = await eventually(() => mesh.call('/route/echo', { headers: { 'x-meshgate-route': 'forged;version=v9' } }), {
      until: (r) => r.status === 403,
      timeoutMs: 15_000,
      what: 'the route-echo check to be in force',
    });
    expect(JSON.parse(JSON.parse(seen.text).reason)).toEqual({ name: 'orders#default', labels: {} });
    const passed = await mesh.call('/orders/1', { headers: { 'x-meshgate-route': 'forged' } });
    expect(passed.status).toBe(200);
    expect(JSON.parse(passed.text).headers['x-meshgate-route']).toBeUndefined();
  }, 60_000);

  it('contains a hostile check: every attack gets the failure mode, and the sidecar keeps answering', async () => {
    await mesh.h.write('shop/hostile.yaml', policyYaml('Filter', 'hostile', { selector: { services: ['orders'] }, source: HOSTILE, budget: { cpuMs: 50, memoryMiB: 8 } }));
    await eventually(() => mesh.call('/hostile/reach'), { until: (r) => r.status === 403, timeoutMs: 15_000, what: 'the hostile check to be in force' });
    // process, require and fetch are not there to reach.
    expect(JSON.parse((await mesh.call('/hostile/reach')).text)).toMatchObject({ rule: 'shop/hostile#nothing_to_reach' });
    for (const attack of ['/hostile/loop', '/hostile/memory', '/hostile/gigabyte']) {
      const started = performance.now();
      const res = await mesh.call(attack);
      expect({ attack, status: res.status, code: res.headers['x-meshgate-reason'] }).toEqual({ attack, status: 503, code: 'filter.user_check_failed' });
      expect(performance.now() - started).toBeLessThan(5_000);
      const ready = await request(`${mesh.orders.adminUrl}/ready`);
      await ready.body.dump();
      expect(ready.statusCode).toBe(200);
      expect(await mesh.status('/orders/1')).toBe(200);
    }
    // A polluted prototype stays in the guest: its {} is no verdict (failure mode) even with Object.prototype.allow set, and the host's objects are untouched.
    expect((await mesh.call('/hostile/pollute')).status).toBe(503);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await mesh.status('/orders/1')).toBe(200);
    const metrics = parsePrometheusText(await (await request(`${mesh.orders.adminUrl}/metrics`)).body.text());
    expect(sumOf(metrics, 'meshgate_user_filter_decisions_total', { policy: 'shop/hostile', decision: 'failed_deny', code: 'timeout' })).toBe(1);
    expect(sumOf(metrics, 'meshgate_user_filter_decisions_total', { policy: 'shop/hostile', decision: 'failed_deny' })).toBe(4);
  }, 60_000);

  it('the policy server refuses a new version that does not compile, with file, line and column; the sidecars keep the last good one', async () => {
    await mesh.h.write('api-key-denylist.ts', 'export default function check(call: { headers: Record<string, string> } {\n  return { allow: true };\n}\n');
    // Saving the source alone is enough: the policy server follows it as it follows the YAML naming it.
    const errors = await eventually(() => mesh.ps.server.store.errors().filter((e) => e.document === 'Filter/shop/revoked-api-keys'), {
      until: (found) => found.length > 0,
      timeoutMs: 15_000,
      what: 'the policy server to refuse the broken source',
    });
    expect(errors[0]).toMatchObject({ field: 'spec.sourceFile', reason: "api-key-denylist.ts: line 1, column 73: Expected ',', got '{'" });
    // The last good copy stays in force.
    const denied = await mesh.call('/orders/1', { headers: { 'x-api-key': 'ak_live_7Hq2secretsecret' } });
    expect(JSON.parse(denied.text)).toMatchObject({ code: 'filter.denied', rule: 'shop/revoked-api-keys#api_key_revoked' });
  }, 60_000);
});

describe('a check signing with a key from a mounted secret (userFilters.secretsDir)', () => {
  let mesh: Mesh;
  let secrets: string;
  const KEY = Buffer.from('a mounted secret, never in the policy');
  beforeAll(async () => {
    secrets = await mkdtemp(path.join(tmpdir(), 'meshgate-e2e-secrets-'));
    await writeFile(path.join(secrets, 'orders-hmac-key'), KEY);
    const source = await readFile(path.join(EXAMPLES, 'hmac-signature.ts'), 'utf8');
    mesh = await startMesh({ orders: { userFilters: { secretsDir: secrets } }, policies: { 'shop/allow.yaml': allowFrontendCalls } });
    // Pushed once the mesh answers (its start waits for a plain call to pass, which this check refuses).
    await mesh.h.write(
      'shop/signed.yaml',
      policyYaml('Filter', 'signed-requests', { selector: { services: ['orders'] }, secrets: ['orders-hmac-key'], config: { keySecret: 'orders-hmac-key', windowSeconds: 300 }, source }),
    );
    await eventually(() => mesh.call('/orders/1'), { until: (r) => r.status === 403, timeoutMs: 15_000, what: 'the signature check to be in force' });
  }, 60_000);
  afterAll(async () => {
    await mesh?.close();
    await rm(secrets, { recursive: true, force: true });
  });

  it('admits a call signed with the mounted key and denies one signed with another, the key nowhere in the policy', async () => {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const sign = (key: Buffer) => createHmac('sha256', key).update(`GET\n/orders/1\n\n${timestamp}`).digest('hex');
    const good = await mesh.call('/orders/1', { headers: { 'x-timestamp': timestamp, 'x-signature': sign(KEY) } });
    expect(good.status).toBe(200);
    const forged = await mesh.call('/orders/1', { headers: { 'x-timestamp': timestamp, 'x-signature': sign(Buffer.from('another key')) } });
    expect({ status: forged.status, body: JSON.parse(forged.text) }).toMatchObject({ status: 403, body: { rule: 'shop/signed-requests#signature_invalid' } });
    const dump = await request(`${mesh.orders.adminUrl}/config_dump`);
    expect(await dump.body.text()).not.toContain(KEY.toString());
  });
});
