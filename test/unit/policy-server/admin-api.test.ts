import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { adminApiConfigSchema } from '../../../src/config/admin-api-schema.ts';
import { createAdminApi } from '../../../src/policy-server/admin-api.ts';
import type { AdminAuthenticator } from '../../../src/policy-server/admin-auth.ts';
import type { PolicyAuditLog } from '../../../src/policy-server/audit-log.ts';
import { createPolicyAuditLog } from '../../../src/policy-server/audit-log.ts';
import type { AuditEntry, AuditLog } from '../../../src/policy-server/contracts.ts';
import { createRbac } from '../../../src/policy-server/rbac.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
import type { FakeDocumentStore, FakeSubscriberDirectory } from '../../helpers/policy-fakes.ts';
import { authzPolicy, createFakeDocumentStore, createFakeSubscriberDirectory } from '../../helpers/policy-fakes.ts';

/*
 * The handler on a plain node:http server, with a stand-in authenticator
 * (`x-test-subject` names the caller) so these tests are about routing,
 * RBAC, validation and the audit trail. Real mTLS and JWT callers are in
 * test/integration/policy-admin.test.ts.
 */

const fakeAuth: AdminAuthenticator = {
  async authenticate(req) {
    const subject = req.headers['x-test-subject'];
    return typeof subject === 'string' ? { ok: true, subject, via: 'jwt' } : { ok: false, reason: 'no credentials: present a client certificate or a bearer token' };
  },
};

const rbac = createRbac(
  adminApiConfigSchema.parse({
    roleBindings: [
      { subjects: ['admin'], role: 'admin' },
      { subjects: ['dev'], role: 'developer' },
      { subjects: ['viewer'], role: 'viewer' },
    ],
    productionNamespaces: ['prod'],
  }),
);

let dir: string;
let server: http.Server;
let base: string;
let store: FakeDocumentStore;
let directory: FakeSubscriberDirectory;
let audit: PolicyAuditLog;
let auditOverride: AuditLog | undefined;
const clock = createFakeClock(Date.parse('2027-01-15T08:00:00.000Z'));

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const api = createAdminApi({ store, directory, audit: auditOverride ?? audit, auth: fakeAuth, rbac, clock, maxBodyBytes: 4096 });
    if (!api(req, res)) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('not mine\n');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'meshgate-admin-api-'));
  audit = await createPolicyAuditLog({ file: path.join(dir, 'audit.jsonl') });
  auditOverride = undefined;
  store = createFakeDocumentStore();
  directory = createFakeSubscriberDirectory();
});
afterEach(async () => {
  await audit.close();
  await rm(dir, { recursive: true, force: true });
});

async function call(method: string, url: string, opts: { subject?: string; body?: string; headers?: Record<string, string> } = {}) {
  const res = await request(`${base}${url}`, {
    method: method as 'GET',
    headers: { ...(opts.subject ? { 'x-test-subject': opts.subject } : {}), ...opts.headers },
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
  const text = await res.body.text();
  const type = String(res.headers['content-type'] ?? '');
  return { status: res.statusCode, headers: res.headers, text, json: type.includes('json') ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

const DOC_URL = '/api/v1/documents/AuthorizationPolicy/shop/allow-web';

describe('admin API routing', () => {
  it('returns false for paths it does not own, so the role can serve /live and /metrics', async () => {
    for (const url of ['/live', '/metrics', '/api/v2/documents', '/api/v10', '/apiv1']) {
      expect((await call('GET', url)).text).toBe('not mine\n');
    }
  });

  it('authenticates before routing: an anonymous caller learns nothing, not even which paths exist', async () => {
    for (const url of ['/api/v1/documents', '/api/v1/nope', DOC_URL]) {
      const res = await call('GET', url);
      expect(res.status).toBe(401);
      expect(res.json).toEqual({ code: 'admin.unauthenticated', reason: 'no credentials: present a client certificate or a bearer token' });
      expect(res.headers['www-authenticate']).toBe('Bearer');
    }
  });

  it('answers unknown paths and methods with stable codes', async () => {
    expect((await call('GET', '/api/v1/nope', { subject: 'admin' })).json).toMatchObject({ code: 'admin.not_found' });
    expect((await call('GET', '/api/v1/documents/AuthorizationPolicy/shop', { subject: 'admin' })).status).toBe(404);
    const post = await call('POST', '/api/v1/documents', { subject: 'admin', body: '{}' });
    expect(post.status).toBe(405);
    expect(post.json).toMatchObject({ code: 'admin.method_not_allowed' });
    expect(post.headers.allow).toBe('GET');
    expect((await call('PATCH', DOC_URL, { subject: 'admin', body: '{}' })).headers.allow).toBe('GET, PUT, DELETE');
  });

  it('refuses malformed path segments and query parameters with admin.bad_request', async () => {
    expect((await call('GET', '/api/v1/documents/AuthorizationPolicy/%E0%A4%A/x', { subject: 'admin' })).json).toMatchObject({ code: 'admin.bad_request' });
    expect((await call('GET', '/api/v1/documents/AuthorizationPolicy/a%2Fb/x', { subject: 'admin' })).json).toMatchObject({ code: 'admin.bad_request' });
    expect((await call('GET', '/api/v1/documents/AuthorizationPolicy/a%20b/x', { subject: 'admin' })).status).toBe(400);
    for (const limit of ['0', '-1', 'abc', '1001', '1e3']) {
      const res = await call('GET', `/api/v1/audit?limit=${limit}`, { subject: 'viewer' });
      expect(res.json).toEqual({ code: 'admin.bad_request', reason: 'limit must be an integer from 1 to 1000' });
    }
  });
});

describe('admin API reads', () => {
  it('lists documents with digest and file, filtered by kind and namespace', async () => {
    store.seed(authzPolicy('shop', 'b'));
    store.seed(authzPolicy('shop', 'a'));
    store.seed(authzPolicy('billing', 'c'));
    const all = await call('GET', '/api/v1/documents', { subject: 'viewer' });
    expect(all.status).toBe(200);
    const docs = all.json!.documents as Array<Record<string, unknown>>;
    expect(docs.map((d) => d.key)).toEqual(['AuthorizationPolicy/billing/c', 'AuthorizationPolicy/shop/a', 'AuthorizationPolicy/shop/b']);
    expect(docs[1]).toEqual({ key: 'AuthorizationPolicy/shop/a', kind: 'AuthorizationPolicy', namespace: 'shop', name: 'a', digest: expect.stringMatching(/^[0-9a-f]{64}$/), file: 'shop/a.yaml' });
    const shop = await call('GET', '/api/v1/documents?namespace=shop&kind=AuthorizationPolicy', { subject: 'viewer' });
    expect((shop.json!.documents as unknown[]).length).toBe(2);
    expect((await call('GET', '/api/v1/documents?kind=Route', { subject: 'viewer' })).json).toEqual({ documents: [] });
  });

  it('gets one document as JSON, or as YAML when asked', async () => {
    store.seed(authzPolicy('shop', 'allow-web'));
    const json = await call('GET', DOC_URL, { subject: 'viewer' });
    expect(json.json).toMatchObject({ key: 'AuthorizationPolicy/shop/allow-web', file: 'shop/allow-web.yaml', document: authzPolicy('shop', 'allow-web') });
    expect(json.headers.etag).toBe(`"${json.json!.digest as string}"`);
    const yaml = await call('GET', DOC_URL, { subject: 'viewer', headers: { accept: 'application/yaml' } });
    expect(yaml.headers['content-type']).toBe('application/yaml');
    expect(yaml.text).toContain('kind: AuthorizationPolicy\n');
    expect((await call('GET', '/api/v1/documents/AuthorizationPolicy/shop/other', { subject: 'viewer' })).json).toEqual({
      code: 'admin.not_found',
      reason: 'no document AuthorizationPolicy/shop/other',
    });
  });

  it("shows the folder's validation errors", async () => {
    store.setErrors([{ source: { file: 'shop/bad.yaml', index: 1 }, document: 'RateLimitPolicy/shop/burst', field: 'spec.limits[0].window', reason: 'expected a duration like 250ms, 5s, 2m or 1h' }]);
    expect((await call('GET', '/api/v1/errors', { subject: 'viewer' })).json).toEqual({
      errors: [{ file: 'shop/bad.yaml', document: 1, key: 'RateLimitPolicy/shop/burst', field: 'spec.limits[0].window', reason: 'expected a duration like 250ms, 5s, 2m or 1h' }],
    });
  });

  it('shows which sidecar runs which version, and who NACKed what and why', async () => {
    const base = { workload: { service: 'orders', namespace: 'shop' }, address: '10.0.0.7:15006', connectedAt: '2027-01-15T07:59:00.000Z' };
    directory.subscribersList = [
      { ...base, sidecarId: 'orders-1', spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders', sentVersion: 'v2', ackedVersion: 'v2', lastNack: undefined },
      {
        ...base,
        sidecarId: 'orders-2',
        spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders',
        sentVersion: 'v2',
        ackedVersion: 'v1',
        lastNack: { version: 'v2', errors: [{ document: 'Route/shop/orders', field: 'spec.routes[0]', reason: 'unknown subset v3' }], at: '2027-01-15T08:00:00.000Z' },
      },
    ];
    const res = await call('GET', '/api/v1/sidecars', { subject: 'viewer' });
    const sidecars = res.json!.sidecars as Array<Record<string, unknown>>;
    expect(sidecars.map((s) => [s.sidecarId, s.ackedVersion, s.inSync])).toEqual([
      ['orders-1', 'v2', true],
      ['orders-2', 'v1', false],
    ]);
    expect(sidecars[1]!.lastNack).toEqual({ version: 'v2', errors: [{ document: 'Route/shop/orders', field: 'spec.routes[0]', reason: 'unknown subset v3' }], at: '2027-01-15T08:00:00.000Z' });
  });

  it('serves the registry', async () => {
    directory.services = [
      { name: 'orders', namespace: 'shop', endpoints: [{ address: '10.0.0.7:15006', labels: {}, weight: 1 }], identities: ['spiffe://cluster.local/ns/shop/sa/orders'], external: false },
    ];
    expect((await call('GET', '/api/v1/registry', { subject: 'viewer' })).json).toEqual({ services: directory.services });
  });

  it('refuses every read to a subject with no role binding', async () => {
    for (const url of ['/api/v1/documents', '/api/v1/errors', '/api/v1/sidecars', '/api/v1/registry', '/api/v1/audit', DOC_URL]) {
      expect((await call('GET', url, { subject: 'stranger' })).json).toEqual({ code: 'admin.forbidden', reason: 'no role binding for stranger' });
    }
  });

  it('tells any authenticated caller who it is and which role it has', async () => {
    expect((await call('GET', '/api/v1/whoami', { subject: 'dev' })).json).toEqual({ subject: 'dev', via: 'jwt', role: 'developer' });
    expect((await call('GET', '/api/v1/whoami', { subject: 'stranger' })).json).toEqual({ subject: 'stranger', via: 'jwt', role: null });
  });
});

describe('admin API writes', () => {
  const yamlBody = (extra: Record<string, unknown> = {}, ns = 'shop', name = 'allow-web') => stringify(authzPolicy(ns, name, extra));

  it('creates (201) then updates (200) a document, each audited with its diff', async () => {
    const created = await call('PUT', DOC_URL, { subject: 'admin', body: yamlBody(), headers: { 'content-type': 'application/yaml' } });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ result: 'applied', key: 'AuthorizationPolicy/shop/allow-web', created: true, digest: expect.any(String) });
    const updated = await call('PUT', DOC_URL, { subject: 'dev', body: JSON.stringify(authzPolicy('shop', 'allow-web', { action: 'DENY' })), headers: { 'content-type': 'application/json' } });
    expect(updated.status).toBe(200);
    expect(updated.json).toMatchObject({ created: false });
    expect(store.documents()[0]!.document.spec).toMatchObject({ action: 'DENY' });
    const entries = (await call('GET', '/api/v1/audit', { subject: 'viewer' })).json!.entries as AuditEntry[];
    expect(entries.map((e) => [e.actor.subject, e.actor.role, e.action, e.document, e.result])).toEqual([
      ['admin', 'admin', 'put', 'AuthorizationPolicy/shop/allow-web', 'applied'],
      ['dev', 'developer', 'put', 'AuthorizationPolicy/shop/allow-web', 'applied'],
    ]);
    expect(entries[0]!.time).toBe('2027-01-15T08:00:00.000Z');
    expect(entries[0]!.diff).toMatch(/^--- \/dev\/null\n\+\+\+ b\/AuthorizationPolicy\/shop\/allow-web\n/);
    expect(entries[1]!.diff).toContain('-  action: ALLOW\n+  action: DENY\n');
  });

  it('deletes a document, audited with the removed YAML; a second delete is 404', async () => {
    store.seed(authzPolicy('shop', 'allow-web'));
    expect((await call('DELETE', DOC_URL, { subject: 'dev' })).json).toEqual({ result: 'applied', key: 'AuthorizationPolicy/shop/allow-web' });
    expect(store.documents()).toEqual([]);
    expect((await call('DELETE', DOC_URL, { subject: 'dev' })).json).toEqual({ code: 'admin.not_found', reason: 'no document AuthorizationPolicy/shop/allow-web' });
    const entries = await audit.read();
    expect(entries.map((e) => [e.action, e.result, e.reason])).toEqual([
      ['delete', 'applied', undefined],
      ['delete', 'rejected', 'no such document'],
    ]);
    expect(entries[0]!.diff).toContain('+++ /dev/null\n');
    expect(entries[0]!.diff).toContain('-kind: AuthorizationPolicy\n');
  });

  it('403s a developer writing to a production namespace, and audits it as forbidden with the attempted diff', async () => {
    store.seed(authzPolicy('prod', 'allow-web'));
    const url = '/api/v1/documents/AuthorizationPolicy/prod/allow-web';
    const put = await call('PUT', url, { subject: 'dev', body: yamlBody({ action: 'DENY' }, 'prod') });
    expect(put.status).toBe(403);
    expect(put.json).toEqual({ code: 'admin.forbidden', reason: 'role developer may not write to production namespace prod' });
    expect((await call('DELETE', url, { subject: 'dev' })).status).toBe(403);
    expect(store.puts).toEqual([]);
    expect(store.documents()).toHaveLength(1);
    const entries = await audit.read();
    expect(entries.map((e) => [e.actor.subject, e.action, e.result, e.reason])).toEqual([
      ['dev', 'put', 'forbidden', 'role developer may not write to production namespace prod'],
      ['dev', 'delete', 'forbidden', 'role developer may not write to production namespace prod'],
    ]);
    expect(entries[0]!.diff).toContain('-  action: ALLOW\n+  action: DENY\n');
  });

  it("403s a viewer's writes, audited; a subject without a binding is refused and not audited", async () => {
    expect((await call('PUT', DOC_URL, { subject: 'viewer', body: yamlBody() })).json).toEqual({ code: 'admin.forbidden', reason: 'role viewer may not write' });
    expect((await call('PUT', DOC_URL, { subject: 'stranger', body: yamlBody() })).json).toEqual({ code: 'admin.forbidden', reason: 'no role binding for stranger' });
    expect(store.puts).toEqual([]);
    expect((await audit.read()).map((e) => [e.actor.subject, e.result])).toEqual([['viewer', 'forbidden']]);
  });

  it("400s an invalid document with the store's exact errors, writes nothing, audits it as rejected", async () => {
    const body = stringify({ apiVersion: 'meshgate.dev/v1', kind: 'AuthorizationPolicy', metadata: { name: 'allow-web', namespace: 'shop' }, spec: { rules: 'all' } });
    const res = await call('PUT', DOC_URL, { subject: 'admin', body });
    expect(res.status).toBe(400);
    expect(res.json).toEqual({
      code: 'admin.invalid_document',
      reason: 'AuthorizationPolicy/shop/allow-web is not valid',
      errors: [{ file: 'api', document: 0, key: 'AuthorizationPolicy/shop/allow-web', field: 'spec.rules', reason: 'expected an array' }],
    });
    expect(store.documents()).toEqual([]);
    expect((await audit.read()).map((e) => [e.result, e.reason])).toEqual([['rejected', 'spec.rules: expected an array']]);
  });

  it('400s a document that does not match its path, before the store sees it', async () => {
    const res = await call('PUT', DOC_URL, { subject: 'admin', body: yamlBody({}, 'billing', 'allow-all') });
    expect(res.json).toEqual({
      code: 'admin.invalid_document',
      reason: 'AuthorizationPolicy/shop/allow-web is not valid',
      errors: [
        { file: 'api', document: 0, key: 'AuthorizationPolicy/shop/allow-web', field: 'metadata.namespace', reason: 'does not match the path: expected "shop", got "billing"' },
        { file: 'api', document: 0, key: 'AuthorizationPolicy/shop/allow-web', field: 'metadata.name', reason: 'does not match the path: expected "allow-web", got "allow-all"' },
      ],
    });
    expect(store.puts).toEqual([]);
  });

  it("judges a developer by the path's namespace: a production document cannot be smuggled through another path", async () => {
    const res = await call('PUT', DOC_URL, { subject: 'dev', body: yamlBody({}, 'prod') });
    expect(res.status).toBe(400);
    expect(store.puts).toEqual([]);
  });

  it('400s bodies that are not one YAML mapping', async () => {
    const cases: Array<[string, string, string?]> = [
      ['', 'empty body: expected one policy document'],
      ['a: 1\n---\nb: 2\n', 'expected one policy document, got 2'],
      ['- 1\n- 2\n', 'expected a mapping (a policy document)'],
      ['kind: A\nkind: B\n', 'invalid YAML at 2:1: Map keys must be unique ("kind" is also on line 1)', 'kind'],
    ];
    for (const [body, reason, field = ''] of cases) {
      const res = await call('PUT', DOC_URL, { subject: 'admin', body });
      expect(res.status, body).toBe(400);
      expect(res.json, body).toEqual({ code: 'admin.invalid_document', reason: 'AuthorizationPolicy/shop/allow-web is not valid', errors: [{ file: 'api', document: 0, key: null, field, reason }] });
    }
    expect(store.puts).toEqual([]);
  });

  it('hands the store the YAML it checked and showed in the diff', async () => {
    await call('PUT', DOC_URL, { subject: 'admin', body: JSON.stringify(authzPolicy('shop', 'allow-web')) });
    expect(store.puts).toEqual([stringify(authzPolicy('shop', 'allow-web'), { lineWidth: 0, aliasDuplicateObjects: false })]);
  });

  it('413s a body over the cap, by Content-Length or as it streams, and audits the attempt', async () => {
    const big = `${yamlBody()}# ${'x'.repeat(5000)}\n`;
    const res = await call('PUT', DOC_URL, { subject: 'admin', body: big });
    expect(res.status).toBe(413);
    expect(res.json).toEqual({ code: 'admin.body_too_large', reason: 'body larger than 4096 bytes' });
    const chunked = await request(`${base}${DOC_URL}`, {
      method: 'PUT',
      headers: { 'x-test-subject': 'admin' },
      body: Readable.from(
        (function* () {
          for (let i = 0; i < 10; i++) yield Buffer.alloc(1024, 0x20);
        })(),
      ),
    });
    expect(chunked.statusCode).toBe(413);
    await chunked.body.dump();
    expect(store.puts).toEqual([]);
    expect((await audit.read()).map((e) => [e.result, e.reason])).toEqual([
      ['rejected', 'body larger than 4096 bytes'],
      ['rejected', 'body larger than 4096 bytes'],
    ]);
  });

  it('reports an applied change whose audit entry failed as admin.audit_failed, never silently', async () => {
    auditOverride = {
      append: () => Promise.reject(new Error('ENOSPC')),
      read: async () => [],
    };
    const res = await call('PUT', DOC_URL, { subject: 'admin', body: yamlBody() });
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ code: 'admin.audit_failed', reason: 'the change was applied but its audit entry could not be written', applied: true, key: 'AuthorizationPolicy/shop/allow-web' });
  });

  it('answers admin.internal when the store fails, and keeps serving', async () => {
    store.failNext(new Error('EIO'));
    const res = await call('PUT', DOC_URL, { subject: 'admin', body: yamlBody() });
    expect(res.json).toEqual({ code: 'admin.internal', reason: 'internal error' });
    expect((await call('PUT', DOC_URL, { subject: 'admin', body: yamlBody() })).status).toBe(201);
  });

  it('serialises concurrent writes so each audit diff starts from the previous result', async () => {
    const actions = ['A1', 'A2', 'A3', 'A4', 'A5'];
    await Promise.all(actions.map((action) => call('PUT', DOC_URL, { subject: 'admin', body: yamlBody({ action }) })));
    const entries = await audit.read();
    expect(entries).toHaveLength(5);
    expect(entries[0]!.diff).toMatch(/^--- \/dev\/null/);
    for (let i = 1; i < entries.length; i++) {
      const previous = /\+ {2}action: (A\d)/.exec(entries[i - 1]!.diff)![1];
      expect(entries[i]!.diff).toContain(`-  action: ${previous}\n`);
    }
  });
});
