import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { adminApiConfigSchema } from '../../src/config/admin-api-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import { expectIdentity } from '../../src/identity/mesh-tls.ts';
import { createAdminApi } from '../../src/policy-server/admin-api.ts';
import { adminTlsServerOptions, createAdminAuthenticator } from '../../src/policy-server/admin-auth.ts';
import type { PolicyAuditLog } from '../../src/policy-server/audit-log.ts';
import { createPolicyAuditLog } from '../../src/policy-server/audit-log.ts';
import type { AuditEntry } from '../../src/policy-server/contracts.ts';
import { createRbac } from '../../src/policy-server/rbac.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { createCaMaterialDir } from '../helpers/ca-fixture.ts';
import type { TestCert } from '../helpers/mesh-pki.ts';
import { issueCert, rootOf } from '../helpers/mesh-pki.ts';
import type { FakeDocumentStore } from '../helpers/policy-fakes.ts';
import { authzPolicy, createFakeDocumentStore, createFakeSubscriberDirectory } from '../helpers/policy-fakes.ts';

/*
 * The admin API as the policy-server role serves it: node:https on
 * 127.0.0.1 port 0, client certificates requested but optional, callers
 * identified by a certificate from the mesh CA or by a bearer JWT, with the
 * real authenticator, RBAC and audit file (only the document store and
 * subscriber directory are in-memory fakes).
 */

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/meshgate-system/sa/policy-server`;
const ADMIN_ID = `spiffe://${TD}/ns/platform/sa/policy-admin`;
const DEV_ID = `spiffe://${TD}/ns/team-shop/sa/ci`;
const VIEWER_ID = `spiffe://${TD}/ns/observability/sa/dashboard`;

const jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });

let caDir: string;
let work: string;
let server: https.Server;
let base: string;
let store: FakeDocumentStore;
let audit: PolicyAuditLog;
let auditFile: string;
let rootPem: string;
const logLines: string[] = [];
const agents: Agent[] = [];
const certs: Record<'admin' | 'dev' | 'viewer' | 'unbound' | 'stranger', TestCert> = {} as never;

function agent(cert?: TestCert): Agent {
  const a = new Agent({
    connect: {
      ca: rootPem,
      ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
      // The server is known by its SPIFFE ID, as everywhere in the mesh, not by a host name.
      checkServerIdentity: expectIdentity(new Set([SERVER_ID])),
    },
  });
  agents.push(a);
  return a;
}

async function call(method: string, url: string, opts: { as?: Agent; token?: string; body?: string } = {}) {
  const res = await request(`${base}${url}`, {
    method: method as 'GET',
    dispatcher: opts.as ?? agent(),
    headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
  const json = (await res.body.json()) as Record<string, unknown>;
  return { status: res.statusCode, json };
}

function jwt(sub: string, opts: { expiresIn?: number; audience?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub })
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer('https://login.example.com')
    .setAudience(opts.audience ?? 'meshgate-policy-admin')
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.expiresIn ?? 600))
    .sign(jwtKey.privateKey);
}

const docUrl = (ns: string, name = 'allow-web') => `/api/v1/documents/AuthorizationPolicy/${ns}/${name}`;

beforeAll(async () => {
  caDir = await createCaMaterialDir({ trustDomain: TD });
  work = await mkdtemp(path.join(tmpdir(), 'meshgate-policy-admin-'));
  const root = await rootOf(caDir);
  rootPem = root.certPem;
  const serverCert = await issueCert({ spiffeId: SERVER_ID, issuer: root });
  certs.admin = await issueCert({ spiffeId: ADMIN_ID, issuer: root });
  certs.dev = await issueCert({ spiffeId: DEV_ID, issuer: root });
  certs.viewer = await issueCert({ spiffeId: VIEWER_ID, issuer: root });
  certs.unbound = await issueCert({ spiffeId: `spiffe://${TD}/ns/shop/sa/web`, issuer: root });
  certs.stranger = await issueCert({ spiffeId: ADMIN_ID });

  await writeFile(path.join(work, 'admin-jwt.pub.pem'), jwtKey.publicKey.export({ format: 'pem', type: 'spki' }));
  const config = adminApiConfigSchema.parse({
    mtls: { trustDomains: [TD] },
    jwt: { issuers: ['https://login.example.com'], publicKeyFile: 'admin-jwt.pub.pem', algorithms: ['ES256'] },
    roleBindings: [
      { subjects: [ADMIN_ID, 'alice@example.com'], role: 'admin' },
      { subjects: [`spiffe://${TD}/ns/team-shop/*`, 'bob@example.com'], role: 'developer' },
      { subjects: [VIEWER_ID], role: 'viewer' },
    ],
    productionNamespaces: ['prod'],
    audit: { file: 'policy-audit.jsonl' },
  });
  auditFile = path.join(work, config.audit.file);
  audit = await createPolicyAuditLog({ file: auditFile });
  store = createFakeDocumentStore();
  store.seed(authzPolicy('prod', 'allow-web'));
  const auth = await createAdminAuthenticator(config, { clock: systemClock, resolvePath: (f) => path.resolve(work, f), configFile: 'policy-server.yaml' });
  const logger = createLogger({
    level: 'debug',
    name: 'policy-server',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString('utf8'));
        done();
      },
    }),
  });
  const api = createAdminApi({ store, directory: createFakeSubscriberDirectory(), audit, auth, rbac: createRbac(config), clock: systemClock, maxBodyBytes: config.maxBodyBytes, logger });
  server = https.createServer(adminTlsServerOptions({ key: serverCert.keyPem, cert: serverCert.certPem, ca: rootPem }), (req, res) => {
    if (api(req, res)) return;
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await audit?.close();
  await rm(work, { recursive: true, force: true });
  await rm(caDir, { recursive: true, force: true });
});

async function auditEntries(): Promise<AuditEntry[]> {
  return (await readFile(auditFile, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditEntry);
}

describe('policy-server admin API over TLS', () => {
  it('401s a caller with no credentials', async () => {
    const res = await call('GET', '/api/v1/documents');
    expect(res.status).toBe(401);
    expect(res.json).toEqual({ code: 'admin.unauthenticated', reason: 'no credentials: present a client certificate or a bearer token' });
  });

  it("401s a client certificate from another CA, even with an admin's SPIFFE ID", async () => {
    const res = await call('GET', '/api/v1/documents', { as: agent(certs.stranger) });
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('admin.unauthenticated');
    expect(res.json.reason).toMatch(/^client certificate not verified \(/);
  });

  it('identifies callers by the SPIFFE ID of their certificate or the subject of their token', async () => {
    expect((await call('GET', '/api/v1/whoami', { as: agent(certs.admin) })).json).toEqual({ subject: ADMIN_ID, via: 'mtls', role: 'admin' });
    expect((await call('GET', '/api/v1/whoami', { token: await jwt('bob@example.com') })).json).toEqual({ subject: 'bob@example.com', via: 'jwt', role: 'developer' });
  });

  it('401s an expired token and a token for another audience', async () => {
    const expired = await call('GET', '/api/v1/documents', { token: await jwt('alice@example.com', { expiresIn: -3600 }) });
    expect(expired).toEqual({ status: 401, json: { code: 'admin.unauthenticated', reason: 'token expired' } });
    const otherAudience = await call('GET', '/api/v1/documents', { token: await jwt('alice@example.com', { audience: 'meshgate-ca' }) });
    expect(otherAudience).toEqual({ status: 401, json: { code: 'admin.unauthenticated', reason: 'token audience not accepted' } });
  });

  it('lets an admin write and delete, in any namespace', async () => {
    const admin = agent(certs.admin);
    const put = await call('PUT', docUrl('prod', 'deny-all'), { as: admin, body: stringify(authzPolicy('prod', 'deny-all', { action: 'DENY' })) });
    expect(put.status).toBe(201);
    expect(put.json).toMatchObject({ result: 'applied', key: 'AuthorizationPolicy/prod/deny-all' });
    expect((await call('GET', docUrl('prod', 'deny-all'), { as: admin })).json).toMatchObject({ document: authzPolicy('prod', 'deny-all', { action: 'DENY' }) });
    const del = await call('DELETE', docUrl('prod', 'deny-all'), { token: await jwt('alice@example.com') });
    expect(del).toEqual({ status: 200, json: { result: 'applied', key: 'AuthorizationPolicy/prod/deny-all' } });
    expect((await call('GET', docUrl('prod', 'deny-all'), { as: admin })).status).toBe(404);
    const entries = (await auditEntries()).filter((e) => e.document === 'AuthorizationPolicy/prod/deny-all');
    expect(entries.map((e) => [e.actor.subject, e.actor.via, e.action, e.result])).toEqual([
      [ADMIN_ID, 'mtls', 'put', 'applied'],
      ['alice@example.com', 'jwt', 'delete', 'applied'],
    ]);
  });

  it('lets a developer write to a non-production namespace', async () => {
    const res = await call('PUT', docUrl('shop'), { as: agent(certs.dev), body: JSON.stringify(authzPolicy('shop', 'allow-web')) });
    expect(res.status).toBe(201);
    expect(store.documents().map((d) => d.key)).toContain('AuthorizationPolicy/shop/allow-web');
  });

  it('403s a developer writing to a production namespace, writes nothing, and audits it as forbidden', async () => {
    const before = store.documents().find((d) => d.key === 'AuthorizationPolicy/prod/allow-web')!.digest;
    const res = await call('PUT', docUrl('prod'), { as: agent(certs.dev), body: stringify(authzPolicy('prod', 'allow-web', { action: 'DENY' })) });
    expect(res).toEqual({ status: 403, json: { code: 'admin.forbidden', reason: 'role developer may not write to production namespace prod' } });
    expect(store.documents().find((d) => d.key === 'AuthorizationPolicy/prod/allow-web')!.digest).toBe(before);
    const last = (await auditEntries()).at(-1)!;
    expect(last).toMatchObject({
      actor: { subject: DEV_ID, role: 'developer', via: 'mtls' },
      action: 'put',
      document: 'AuthorizationPolicy/prod/allow-web',
      result: 'forbidden',
      reason: 'role developer may not write to production namespace prod',
    });
    expect(last.diff).toContain('-  action: ALLOW\n+  action: DENY\n');
    // The same entry on the API, newest last.
    const api = await call('GET', '/api/v1/audit?limit=1', { as: agent(certs.viewer) });
    expect(api.json.entries).toEqual([last]);
  });

  it('lets a viewer read but not write', async () => {
    const viewer = agent(certs.viewer);
    expect((await call('GET', '/api/v1/documents', { as: viewer })).status).toBe(200);
    const res = await call('PUT', docUrl('shop', 'viewer-doc'), { as: viewer, body: stringify(authzPolicy('shop', 'viewer-doc')) });
    expect(res).toEqual({ status: 403, json: { code: 'admin.forbidden', reason: 'role viewer may not write' } });
    expect((await call('DELETE', docUrl('shop'), { as: viewer })).status).toBe(403);
    expect(store.documents().map((d) => d.key)).not.toContain('AuthorizationPolicy/shop/viewer-doc');
    expect(store.documents().map((d) => d.key)).toContain('AuthorizationPolicy/shop/allow-web');
  });

  it('403s a verified workload with no role binding, for reads too', async () => {
    expect((await call('GET', '/api/v1/documents', { as: agent(certs.unbound) })).json).toEqual({
      code: 'admin.forbidden',
      reason: `no role binding for spiffe://${TD}/ns/shop/sa/web`,
    });
  });

  it('400s an invalid document with its exact errors, and writes nothing', async () => {
    const before = store.puts.length;
    const body = stringify({ apiVersion: 'meshgate.dev/v2', kind: 'AuthorizationPolicy', metadata: { name: 'broken', namespace: 'shop' }, spec: { rules: 'all' } });
    const res = await call('PUT', docUrl('shop', 'broken'), { as: agent(certs.admin), body });
    expect(res).toEqual({
      status: 400,
      json: {
        code: 'admin.invalid_document',
        reason: 'AuthorizationPolicy/shop/broken is not valid',
        errors: [
          { file: 'api', document: 0, key: 'AuthorizationPolicy/shop/broken', field: 'apiVersion', reason: 'expected meshgate.dev/v1' },
          { file: 'api', document: 0, key: 'AuthorizationPolicy/shop/broken', field: 'spec.rules', reason: 'expected an array' },
        ],
      },
    });
    expect(store.puts.length).toBe(before + 1);
    expect(store.documents().map((d) => d.key)).not.toContain('AuthorizationPolicy/shop/broken');
    expect((await auditEntries()).at(-1)).toMatchObject({ result: 'rejected', reason: 'apiVersion: expected meshgate.dev/v1; spec.rules: expected an array' });
  });

  it('never writes a token to the audit log or the server log', async () => {
    const token = await jwt('alice@example.com');
    await call('PUT', docUrl('shop', 'token-check'), { token, body: stringify(authzPolicy('shop', 'token-check')) });
    await call('GET', '/api/v1/documents', { token: `${token}x` });
    const signature = token.split('.')[2]!;
    expect(await readFile(auditFile, 'utf8')).not.toContain(signature);
    await expect.poll(() => logLines.join('')).toContain('admin: put AuthorizationPolicy/shop/token-check applied');
    expect(logLines.join('')).not.toContain(signature);
  });
});
