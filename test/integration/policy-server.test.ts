import { readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import type { WireSnapshot } from '../../src/policy/policy-api.ts';
import { createPolicyClient, decodeSnapshot, policyChannelCredentials, policyServerSpiffeId } from '../../src/policy/policy-api.ts';
import { issueCert, rootOf } from '../helpers/mesh-pki.ts';
import type { PolicyHarness, TestPolicyServer } from './policy-server-harness.ts';
import { createPolicyHarness, eventually, openSubscriber, TRUST_DOMAIN } from './policy-server-harness.ts';

/*
 * meshgate policy-server over real gRPC and real mutual TLS on 127.0.0.1
 * port 0: the server gets its certificate from a test CA, subscribers are
 * sidecar-like clients with CA-issued client certificates.
 */

const authz = (namespace: string, name: string, services: string[] | undefined, extra = ''): string =>
  [
    'apiVersion: meshgate.dev/v1',
    'kind: AuthorizationPolicy',
    'metadata:',
    `  name: ${name}`,
    `  namespace: ${namespace}`,
    'spec:',
    ...(services ? ['  selector:', `    services: [${services.join(', ')}]`] : []),
    '  action: ALLOW',
    '  rules:',
    '    - from:',
    '        - principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]',
    extra,
  ]
    .filter((line) => line !== '')
    .join('\n') + '\n';

const names = (s: WireSnapshot): string[] => s.documents.map((d) => `${d.kind}/${d.namespace}/${d.name}`);

describe('meshgate policy-server', () => {
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let orders: WorkloadCredentials;
  let frontend: WorkloadCredentials;

  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/orders.yaml', authz('shop', 'orders-only', ['orders']));
    await h.write('shop/frontend.yaml', authz('shop', 'frontend-only', ['frontend']));
    await h.write('shop/whole-namespace.yaml', authz('shop', 'everyone-in-shop', undefined));
    await h.write('web/other.yaml', authz('web', 'other-namespace', undefined));
    await h.write('mesh.yaml', authz('meshgate-system', 'mesh-wide', undefined));
    ps = await h.start();
    [orders, frontend] = await Promise.all([h.identity('shop', 'orders'), h.identity('shop', 'frontend')]);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('serves with a certificate from the CA for spiffe://<td>/ns/meshgate-system/sa/policy-server', async () => {
    expect(ps.server.spiffeId).toBe('spiffe://cluster.local/ns/meshgate-system/sa/policy-server');
    expect(ps.server.identity.current()?.facts.spiffeId).toBe(ps.server.spiffeId);
    const ready = await request(`http://127.0.0.1:${ps.server.adminPort}/ready`);
    expect(ready.statusCode).toBe(200);
    expect(await ready.body.json()).toEqual({ ready: true, checks: { certificate: 'ok', policies: 'ok' } });
  });

  it("sends a subscriber its workload's documents only", async () => {
    const sub = ps.subscribe(orders, { sidecarId: 'orders-1' });
    const first = await sub.next();
    expect(names(first)).toEqual(['AuthorizationPolicy/meshgate-system/mesh-wide', 'AuthorizationPolicy/shop/everyone-in-shop', 'AuthorizationPolicy/shop/orders-only']);
    expect(first.version).toMatch(/^[0-9a-f]{16}$/);
    expect(first.serverId).toBe(ps.server.serverId);
    const decoded = decodeSnapshot(first);
    expect(decoded.documents.find((d) => d.key === 'AuthorizationPolicy/shop/orders-only')?.document?.spec).toMatchObject({ selector: { services: ['orders'] }, action: 'ALLOW' });

    const other = ps.subscribe(frontend, { sidecarId: 'frontend-1' });
    expect(names(await other.next())).toEqual(['AuthorizationPolicy/meshgate-system/mesh-wide', 'AuthorizationPolicy/shop/everyone-in-shop', 'AuthorizationPolicy/shop/frontend-only']);
    sub.close();
    other.close();
  });

  it('gets a folder change to a subscriber in well under a second, and only to the workloads it concerns', async () => {
    const sub = ps.subscribe(orders, { sidecarId: 'orders-latency' });
    const unaffected = ps.subscribe(frontend, { sidecarId: 'frontend-latency' });
    const before = await sub.next();
    const otherBefore = await unaffected.next();
    const started = performance.now();
    await h.write('shop/orders-2.yaml', authz('shop', 'orders-extra', ['orders']));
    const after = await sub.until((s) => s.version !== before.version, 2_000);
    const elapsed = performance.now() - started;
    console.log(`policy-server: folder write -> snapshot at the subscriber in ${elapsed.toFixed(1)} ms`);
    expect(elapsed).toBeLessThan(1_000);
    expect(names(after)).toContain('AuthorizationPolicy/shop/orders-extra');
    // Same version for frontend: nothing was sent to it.
    await eventually(() => ps.server.directory.subscribers().find((s) => s.sidecarId === 'orders-latency')?.ackedVersion === after.version);
    expect(unaffected.received).toEqual([otherBefore]);
    await unlink(path.join(h.folder, 'shop/orders-2.yaml'));
    const removed = await sub.until((s) => !names(s).includes('AuthorizationPolicy/shop/orders-extra'), 2_000);
    expect(removed.version).toBe(before.version);
    sub.close();
    unaffected.close();
  });

  it('rejects an invalid document alone with its exact error; the other documents of the file apply', async () => {
    const sub = ps.subscribe(orders, { sidecarId: 'orders-invalid' });
    const before = await sub.next();
    const good = authz('shop', 'orders-good', ['orders']);
    const bad = authz('shop', 'orders-bad', ['orders']).replace('action: ALLOW', 'action: PERMIT');
    await h.write('shop/mixed.yaml', `${good}---\n${bad}`);
    const after = await sub.until((s) => s.version !== before.version);
    expect(names(after)).toContain('AuthorizationPolicy/shop/orders-good');
    expect(names(after)).not.toContain('AuthorizationPolicy/shop/orders-bad');
    expect(ps.server.store.errors()).toEqual([
      {
        source: { file: 'shop/mixed.yaml', index: 1 },
        document: 'AuthorizationPolicy/shop/orders-bad',
        field: 'spec.action',
        reason: 'expected one of ALLOW, DENY, AUDIT, got "PERMIT"',
      },
    ]);
    const metrics = await (await request(`http://127.0.0.1:${ps.server.adminPort}/metrics`)).body.text();
    expect(metrics).toMatch(/meshgate_policy_documents\{state="invalid"\} 1/);
    expect(ps.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('policy document rejected: shop/mixed.yaml: document 1'))).toMatchObject({
      level: 40,
      field: 'spec.action',
      key: 'AuthorizationPolicy/shop/orders-bad',
    });
    await unlink(path.join(h.folder, 'shop/mixed.yaml'));
    await sub.until((s) => s.version === before.version);
    expect(ps.server.store.errors()).toEqual([]);
    sub.close();
  });

  it('records a NACK (version, errors, time) in the directory and counts it', async () => {
    const sub = ps.subscribe(orders, { sidecarId: 'orders-nack' }, { autoAck: false });
    const snapshot = await sub.next();
    sub.ack(snapshot.version, false, [{ document: 'AuthorizationPolicy/shop/orders-only', field: 'spec.rules[0]', reason: 'unsupported here' }]);
    await eventually(() => ps.server.directory.subscribers().find((s) => s.sidecarId === 'orders-nack')?.lastNack !== undefined);
    const view = ps.server.directory.subscribers().find((s) => s.sidecarId === 'orders-nack')!;
    expect(view).toMatchObject({
      workload: { namespace: 'shop', service: 'orders' },
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders',
      sentVersion: snapshot.version,
      ackedVersion: undefined,
      lastNack: { version: snapshot.version, errors: [{ document: 'AuthorizationPolicy/shop/orders-only', field: 'spec.rules[0]', reason: 'unsupported here' }], at: expect.any(String) },
    });
    expect(await ps.server.metrics.nacks.get()).toMatchObject({ values: [{ labels: { namespace: 'shop', service: 'orders' }, value: 1 }] });
    expect(ps.logs.some((l) => l.msg === 'sidecar refused a snapshot (NACK); it keeps enforcing its previous version' && l.sidecarId === 'orders-nack')).toBe(true);
    sub.ack(snapshot.version, true);
    await eventually(() => ps.server.directory.subscribers().find((s) => s.sidecarId === 'orders-nack')?.ackedVersion === snapshot.version);
    sub.close();
  });

  it("registers a subscriber's endpoint for the others while its stream is open", async () => {
    const watcher = ps.subscribe(frontend, { sidecarId: 'frontend-watch', destinations: ['orders.shop'] });
    const empty = await watcher.next();
    expect(empty.services).toEqual([]);
    const member = ps.subscribe(orders, { sidecarId: 'orders-member', address: '10.1.2.3:15006', labels: { version: 'v2' } });
    await member.next();
    const withEndpoint = await watcher.until((s) => s.services.length > 0);
    expect(withEndpoint.services).toEqual([{ name: 'orders', namespace: 'shop', endpoints: [{ address: '10.1.2.3:15006', labels: { version: 'v2' }, weight: 1 }], identities: [], external: false }]);
    expect(ps.server.directory.registry()).toContainEqual(expect.objectContaining({ name: 'orders', namespace: 'shop' }));
    member.close();
    const gone = await watcher.until((s) => s.services.length === 0);
    expect(gone.version).toBe(empty.version);
    await eventually(() => !ps.server.directory.subscribers().some((s) => s.sidecarId === 'orders-member'));
    watcher.close();
  });

  it('takes the workload from the certificate: nothing in the Hello changes it', async () => {
    const watcher = ps.subscribe(frontend, { sidecarId: 'frontend-watch-2', destinations: ['orders.shop', 'frontend.shop'] });
    await watcher.next();
    // An orders certificate pretending, by every field it has, to be frontend.
    const liar = ps.subscribe(orders, {
      sidecarId: 'spiffe://cluster.local/ns/shop/sa/frontend',
      address: '10.9.9.9:15006',
      labels: { app: 'frontend', service: 'frontend', namespace: 'shop' },
      destinations: ['frontend.shop'],
    });
    const snapshot = await liar.next();
    expect(names(snapshot)).toContain('AuthorizationPolicy/shop/orders-only');
    expect(names(snapshot)).not.toContain('AuthorizationPolicy/shop/frontend-only');
    const view = ps.server.directory.subscribers().find((s) => s.address === '10.9.9.9:15006')!;
    expect(view.workload).toEqual({ namespace: 'shop', service: 'orders' });
    expect(view.spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/orders');
    const seen = await watcher.until((s) => s.services.some((svc) => svc.endpoints.length > 0));
    expect(seen.services.map((s) => [s.name, s.endpoints.map((e) => e.address)])).toEqual([['orders', ['10.9.9.9:15006']]]);
    liar.close();
    watcher.close();
  });

  it('refuses a stream without a client certificate at the TLS handshake', async () => {
    const creds = grpc.credentials.createSsl(Buffer.from(h.ca.rootsPem), null, null, {
      checkServerIdentity: () => undefined,
    });
    const client = createPolicyClient(ps.address, creds);
    const sub = openSubscriber(client, { sidecarId: 'anonymous' }, true);
    const status = await sub.ended;
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(sub.received).toEqual([]);
    client.close();
    expect(ps.server.directory.subscribers().some((s) => s.sidecarId === 'anonymous')).toBe(false);
  });

  it('refuses a certificate from another CA at the handshake, and one of another trust domain with UNAUTHENTICATED', async () => {
    const stranger = await issueCert({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders' });
    const client1 = createPolicyClient(ps.address, policyChannelCredentials({ keyPem: stranger.keyPem, chainPem: [stranger.certPem], trustBundlePem: [h.ca.rootsPem] }, ps.server.spiffeId));
    const s1 = openSubscriber(client1, { sidecarId: 'stranger' }, true);
    expect((await s1.ended).code).toBe(grpc.status.UNAVAILABLE);

    const foreign = await issueCert({ spiffeId: 'spiffe://other.example/ns/shop/sa/orders', issuer: await rootOf(h.ca.dir) });
    const client2 = createPolicyClient(ps.address, policyChannelCredentials({ keyPem: foreign.keyPem, chainPem: [foreign.certPem], trustBundlePem: [h.ca.rootsPem] }, ps.server.spiffeId));
    const s2 = openSubscriber(client2, { sidecarId: 'foreign' }, true);
    const status = await s2.ended;
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(status.details).toBe('client certificate has no SPIFFE ID of trust domain cluster.local');
    client1.close();
    client2.close();
  });

  it("a client refuses a server whose certificate is not the policy server's SPIFFE ID", async () => {
    const client = createPolicyClient(ps.address, policyChannelCredentials(orders, policyServerSpiffeId(TRUST_DOMAIN, 'someone-else')));
    const sub = openSubscriber(client, { sidecarId: 'picky' }, true);
    expect((await sub.ended).code).toBe(grpc.status.UNAVAILABLE);
    client.close();
  });

  it('requires a Hello first: an Ack first is INVALID_ARGUMENT, a bad Hello names its field', async () => {
    const client = createPolicyClient(ps.address, policyChannelCredentials(orders, ps.server.spiffeId));
    const stream = client.subscribe();
    stream.on('error', () => undefined);
    const status = new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve));
    stream.write({ ack: { version: 'x', accepted: true } });
    expect(await status).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'the first message must be a Hello' });

    const bad = openSubscriber(client, { sidecarId: 'bad-address', address: 'not an address' }, true);
    expect(await bad.ended).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'hello.address: expected host:port, got "not an address"' });
    client.close();
  });

  it('ends a stream that sends no Hello in time', async () => {
    const quick = await h.start({ push: { debounce: '20ms', helloTimeout: '200ms' }, registry: { shared: { enabled: false } } });
    const client = createPolicyClient(quick.address, policyChannelCredentials(orders, quick.server.spiffeId));
    const stream = client.subscribe();
    stream.on('error', () => undefined);
    const status = await new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve));
    expect(status).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED, details: 'no Hello within 200 ms' });
    client.close();
    await quick.close();
  });

  it('put writes <namespace>/<kind>-<name>.yaml atomically and reaches subscribers; remove deletes it', async () => {
    const sub = ps.subscribe(orders, { sidecarId: 'orders-put' });
    const before = await sub.next();
    const result = await ps.server.store.put(authz('shop', 'via-api', ['orders']));
    expect(result).toMatchObject({ ok: true, key: 'AuthorizationPolicy/shop/via-api', file: 'shop/authorizationpolicy-via-api.yaml' });
    expect(await readFile(path.join(h.folder, 'shop', 'authorizationpolicy-via-api.yaml'), 'utf8')).toBe(authz('shop', 'via-api', ['orders']));
    expect(names(await sub.until((s) => s.version !== before.version))).toContain('AuthorizationPolicy/shop/via-api');
    expect(await ps.server.store.remove('AuthorizationPolicy/shop/via-api')).toBe(true);
    expect(await sub.until((s) => s.version === before.version)).toBeDefined();
    expect((await readdir(path.join(h.folder, 'shop'))).sort()).toEqual(['frontend.yaml', 'orders.yaml', 'whole-namespace.yaml']);
    sub.close();
  });

  it('shows the admin API on the admin listener, next to /live and /metrics', async () => {
    expect((await request(`http://127.0.0.1:${ps.server.adminPort}/live`)).statusCode).toBe(200);
    const api = await request(`http://127.0.0.1:${ps.server.adminPort}/api/v1/documents`);
    expect(api.statusCode).toBe(401);
    await api.body.dump();
    const missing = await request(`http://127.0.0.1:${ps.server.adminPort}/nothing`);
    expect(missing.statusCode).toBe(404);
    await missing.body.dump();
    const metrics = await (await request(`http://127.0.0.1:${ps.server.adminPort}/metrics`)).body.text();
    for (const name of ['meshgate_policy_documents', 'meshgate_policy_subscribers', 'meshgate_policy_pushes_total', 'meshgate_policy_nacks_total']) expect(metrics).toContain(name);
  });
});

describe('meshgate policy-server: admin over TLS, certificate rotation', () => {
  let h: PolicyHarness;
  beforeAll(async () => {
    h = await createPolicyHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it("with admin.tls, the admin listener serves the workload certificate and the admin API sees the caller's SPIFFE ID", async () => {
    const ps = await h.start({
      admin: { address: '127.0.0.1', port: 0, tls: true },
      adminApi: { audit: { file: 'tls-audit.jsonl' }, roleBindings: [{ subjects: ['spiffe://cluster.local/ns/platform/*'], role: 'viewer' }] },
    });
    const caller = await h.identity('platform', 'ops');
    const dispatcher = new Agent({
      connect: {
        ca: h.ca.rootsPem,
        key: caller.keyPem,
        cert: caller.chainPem.join(''),
        // The server's certificate names a SPIFFE ID, not a host.
        checkServerIdentity: (_host: string, cert: { subjectaltname?: string }) =>
          cert.subjectaltname === `URI:${ps.server.spiffeId}` ? undefined : new Error(`unexpected server ${cert.subjectaltname}`),
      },
    });
    const whoami = await request(`https://127.0.0.1:${ps.server.adminPort}/api/v1/whoami`, { dispatcher });
    expect(whoami.statusCode).toBe(200);
    expect(await whoami.body.json()).toEqual({ subject: 'spiffe://cluster.local/ns/platform/sa/ops', via: 'mtls', role: 'viewer' });
    const live = await request(`https://127.0.0.1:${ps.server.adminPort}/live`, { dispatcher });
    expect(live.statusCode).toBe(200);
    await live.body.dump();
    await dispatcher.close();
    await ps.close();
  });

  it('on the real store over mTLS: a NACK shows on /api/v1/sidecars; a developer write to a production namespace is 403 and audited', async () => {
    const ps = await h.start({
      admin: { address: '127.0.0.1', port: 0, tls: true },
      adminApi: {
        audit: { file: 'rbac-audit.jsonl' },
        roleBindings: [{ subjects: ['spiffe://cluster.local/ns/platform/sa/dev'], role: 'developer' }],
        productionNamespaces: ['payments'],
      },
    });
    const dev = await h.identity('platform', 'dev');
    const dispatcher = new Agent({
      connect: {
        ca: h.ca.rootsPem,
        key: dev.keyPem,
        cert: dev.chainPem.join(''),
        checkServerIdentity: (_host: string, cert: { subjectaltname?: string }) =>
          cert.subjectaltname === `URI:${ps.server.spiffeId}` ? undefined : new Error(`unexpected server ${cert.subjectaltname}`),
      },
    });
    const api = (p: string, init: { method?: 'GET' | 'PUT'; body?: string } = {}) =>
      request(`https://127.0.0.1:${ps.server.adminPort}/api/v1${p}`, { dispatcher, method: init.method ?? 'GET', body: init.body, headers: { 'content-type': 'application/yaml' } });
    try {
      const sub = ps.subscribe(await h.identity('shop', 'orders'), { sidecarId: 'orders-nacker' }, { autoAck: false });
      const snapshot = await sub.next();
      sub.ack(snapshot.version, false, [{ document: 'AuthorizationPolicy/shop/x', field: 'spec.rules[0]', reason: 'cannot enforce here' }]);
      await eventually(() => ps.server.directory.subscribers().some((v) => v.lastNack !== undefined));
      const sidecars = (await (await api('/sidecars')).body.json()) as { sidecars: Array<{ sidecarId: string; inSync: boolean; lastNack?: { errors: Array<{ reason: string }> } }> };
      const nacker = sidecars.sidecars.find((v) => v.sidecarId === 'orders-nacker')!;
      expect(nacker.inSync).toBe(false);
      expect(nacker.lastNack?.errors[0]?.reason).toBe('cannot enforce here');
      sub.close();

      const doc = (ns: string) => `apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata: { name: p, namespace: ${ns} }\nspec: { action: ALLOW, rules: [{}] }\n`;
      const forbidden = await api('/documents/AuthorizationPolicy/payments/p', { method: 'PUT', body: doc('payments') });
      expect(forbidden.statusCode).toBe(403);
      expect(await forbidden.body.json()).toMatchObject({ code: 'admin.forbidden' });
      const allowed = await api('/documents/AuthorizationPolicy/shop/p', { method: 'PUT', body: doc('shop') });
      expect(allowed.statusCode).toBe(201);
      await allowed.body.dump();
      await eventually(() => ps.server.store.documents().some((d) => d.key === 'AuthorizationPolicy/shop/p'));
      const audit = (await (await api('/audit')).body.json()) as { entries: Array<{ document: string; result: string; actor: { subject: string; role: string } }> };
      expect(audit.entries.map((e) => [e.document, e.result, e.actor.subject, e.actor.role])).toEqual([
        ['AuthorizationPolicy/payments/p', 'forbidden', 'spiffe://cluster.local/ns/platform/sa/dev', 'developer'],
        ['AuthorizationPolicy/shop/p', 'applied', 'spiffe://cluster.local/ns/platform/sa/dev', 'developer'],
      ]);
    } finally {
      await dispatcher.close();
      await ps.close();
    }
  });

  it('renews its serving certificate and new streams get the new one', async () => {
    const ps = await h.start({
      identity: {
        trustDomain: TRUST_DOMAIN,
        ca: { address: h.ca.address, trustBundleFile: path.join(h.ca.dir, 'trust-bundle.pem'), serverName: 'localhost' },
        tokenFile: path.join(h.dir, 'policy-server.token'),
        ttl: '4s',
        jitterFraction: 0,
      },
    });
    const firstSerial = ps.server.identity.current()!.facts.serial;
    const rotated = await new Promise<string>((resolve) => ps.server.identity.onRotate((c) => resolve(c.facts.serial)));
    expect(rotated).not.toBe(firstSerial);
    const orders = await h.identity('shop', 'orders');
    let seen: string | undefined;
    const creds = grpc.credentials.createSsl(Buffer.from(orders.trustBundlePem.join('')), Buffer.from(orders.keyPem), Buffer.from(orders.chainPem.join('')), {
      checkServerIdentity: (_host, cert) => {
        seen = cert.serialNumber;
        return undefined;
      },
    });
    const client = createPolicyClient(ps.address, creds);
    const sub = openSubscriber(client, { sidecarId: 'after-rotation' }, true);
    await sub.next();
    expect(seen?.toUpperCase()).toBe(ps.server.identity.current()!.facts.serial.toUpperCase());
    expect(seen?.toUpperCase()).not.toBe(firstSerial.toUpperCase());
    sub.close();
    client.close();
    await ps.close();
  });
});
