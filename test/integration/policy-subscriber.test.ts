import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PolicySubscriberConfigInput } from '../../src/config/policy-subscriber-schema.ts';
import { policySubscriberConfigSchema } from '../../src/config/policy-subscriber-schema.ts';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import { grpcPeerIdentity } from '../../src/identity/grpc-peer-identity.ts';
import { createGrpcServerCredentials } from '../../src/identity/grpc-server-credentials.ts';
import { certificateFacts, createCsr, generateKeyPair, privateKeyToPem } from '../../src/identity/x509.ts';
import type { ReceivedSubscribeRequest, WireDocument, WireSnapshot } from '../../src/policy/policy-api.ts';
import { loadPolicyApi } from '../../src/policy/policy-api.ts';
import { canonicalJson } from '../../src/policy/snapshot.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import type { PolicySnapshotStore } from '../../src/sidecar/policy/snapshot-store.ts';
import { createPolicySnapshotStore, snapshotFileFor } from '../../src/sidecar/policy/snapshot-store.ts';
import type { EffectiveSnapshot, PolicySubscriber } from '../../src/sidecar/policy/subscriber.ts';
import { createPolicySubscriber } from '../../src/sidecar/policy/subscriber.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { bearerMetadata, startTestCa } from '../helpers/ca-fixture.ts';
import { eventually } from '../helpers/eventually.ts';
import { createFakeClock } from '../helpers/fake-clock.ts';
import { captureLogs } from '../helpers/log-capture.ts';

/*
 * The sidecar's policy subscriber against a small in-process PolicyDiscovery
 * server: real gRPC over real mutual TLS on 127.0.0.1 port 0, certificates
 * from a test CA. The fake reads the caller's SPIFFE ID from its client
 * certificate, as the real policy server does.
 */

const TRUST_DOMAIN = 'cluster.local';
const SIDECAR_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';

async function workloadCredentials(ca: TestCa, namespace: string, serviceAccount: string): Promise<WorkloadCredentials> {
  const keys = await generateKeyPair('ecdsa-p256');
  const signed = await ca.client().sign({ csrPem: await createCsr(keys, 'ecdsa-p256') }, bearerMetadata(await ca.token(namespace, serviceAccount)));
  return {
    keyPem: await privateKeyToPem(keys.privateKey),
    chainPem: signed.certChainPem,
    trustBundlePem: signed.trustBundlePem,
    facts: certificateFacts(signed.certChainPem[0]!),
  };
}

const model = createPolicyValidator();

/** A document as the policy server sends it: validated (defaults filled in), canonical JSON and its digest. Invalid ones go as written. */
function doc(kind: string, name: string, spec: Record<string, unknown>): WireDocument {
  const raw = { apiVersion: 'meshgate.dev/v1', kind, metadata: { name, namespace: 'shop' }, spec };
  const checked = model.validate(raw, { file: 'test', index: 0 });
  const json = canonicalJson(checked.ok ? checked.document.document : raw);
  return { kind, namespace: 'shop', name, json, digest: createHash('sha256').update(json).digest('hex') };
}

function wireSnapshot(version: string, documents: WireDocument[]): WireSnapshot {
  return {
    version,
    documents,
    services: [{ name: 'orders', namespace: 'shop', endpoints: [{ address: '127.0.0.1:15006', labels: { version: 'v1' }, weight: 0 }], identities: [], external: false }],
    serverId: 'fake',
  };
}

interface Stream {
  readonly peer: string | undefined;
  readonly peerSerial: string | undefined;
  readonly hello: NonNullable<ReceivedSubscribeRequest['hello']>;
  readonly call: grpc.ServerDuplexStream<ReceivedSubscribeRequest, WireSnapshot>;
}

/** A PolicyDiscovery server that serves `snapshot` to every subscriber and records Hellos and Acks. */
async function startFakePolicyServer(ca: TestCa, identity: WorkloadCredentials, opts: { port?: number } = {}) {
  const streams: Stream[] = [];
  const acks: Array<NonNullable<ReceivedSubscribeRequest['ack']> & { peer: string | undefined }> = [];
  const refusals: string[] = [];
  let snapshot = wireSnapshot('v1', [doc('AuthorizationPolicy', 'allow-frontend', { action: 'ALLOW' })]);
  const server = new grpc.Server();
  server.addService(loadPolicyApi().service, {
    subscribe(call: grpc.ServerDuplexStream<ReceivedSubscribeRequest, WireSnapshot>) {
      const peer = grpcPeerIdentity(call.getAuthContext(), TRUST_DOMAIN, { now: () => Date.now(), monotonic: () => performance.now() });
      if (!peer?.ok) {
        refusals.push(peer?.message ?? 'no client certificate');
        call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'no workload identity' });
        return;
      }
      const raw = call.getAuthContext().sslPeerCertificate?.raw;
      const peerSerial = raw ? new X509Certificate(raw).serialNumber : undefined;
      call.on('data', (msg: ReceivedSubscribeRequest) => {
        if (msg.hello) {
          streams.push({ peer: peer.spiffeId, peerSerial, hello: msg.hello, call });
          call.write(snapshot);
        } else if (msg.ack) {
          acks.push({ ...msg.ack, peer: peer.spiffeId });
        }
      });
      call.on('error', () => undefined);
    },
  });
  const credentials = createGrpcServerCredentials({ keyPem: identity.keyPem, certChainPem: identity.chainPem.join(''), clientCaPem: ca.rootsPem }, { clientCertificates: 'required' });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, credentials.credentials, (err, p) => (err ? reject(err) : resolve(p))));
  return {
    address: `127.0.0.1:${port}`,
    port,
    streams,
    acks,
    refusals,
    /** Sets what the next subscribers get, and sends it to the open streams. */
    push(next: WireSnapshot) {
      snapshot = next;
      for (const s of streams) if (!s.call.cancelled && !s.call.destroyed) s.call.write(next);
    },
    /** Ends every open stream with UNAVAILABLE, as a replica going away does; the server keeps listening. */
    dropStreams() {
      for (const s of streams.splice(0)) s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'going away' });
    },
    kill() {
      server.forceShutdown();
    },
  };
}

type FakeServer = Awaited<ReturnType<typeof startFakePolicyServer>>;

async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 8_000): Promise<T> {
  return (await eventually(probe, { timeoutMs, what })) as T;
}

function capturingLogger() {
  return captureLogs({ level: 'debug', name: 'sidecar' });
}

describe('policy subscriber over mutual TLS', () => {
  let ca: TestCa;
  let sidecar: WorkloadCredentials;
  let serverIdentity: WorkloadCredentials;
  let stateDir: string | undefined;
  const running: Array<{ abort: AbortController; done: Promise<void>; store: PolicySnapshotStore }> = [];
  const servers: FakeServer[] = [];

  beforeAll(async () => {
    ca = await startTestCa();
    [sidecar, serverIdentity] = await Promise.all([workloadCredentials(ca, 'shop', 'frontend'), workloadCredentials(ca, 'meshgate-system', 'policy-server')]);
  });
  afterAll(async () => {
    await ca?.close();
  });
  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.abort.abort();
      await r.done;
      // Background writes must end before the folder goes.
      await r.store.flush();
    }
    for (const s of servers.splice(0)) s.kill();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
    stateDir = undefined;
  });

  async function server(identity = serverIdentity, opts: { port?: number } = {}): Promise<FakeServer> {
    const s = await startFakePolicyServer(ca, identity, opts);
    servers.push(s);
    return s;
  }

  async function subscriber(addresses: string[], opts: { config?: Partial<PolicySubscriberConfigInput>; credentials?: () => WorkloadCredentials | undefined; start?: boolean } = {}) {
    stateDir ??= await mkdtemp(path.join(tmpdir(), 'meshgate-policy-'));
    const config = policySubscriberConfigSchema.parse({
      servers: addresses,
      stateDir,
      maxStaleness: '5m',
      connectTimeout: '2s',
      reconnect: { base: '20ms', max: '100ms' },
      destinations: ['orders.shop'],
      ...opts.config,
    });
    const clock = createFakeClock(Date.now());
    const { logger, lines } = capturingLogger();
    const store = createPolicySnapshotStore({ file: snapshotFileFor(config.stateDir, { service: 'frontend', namespace: 'shop' }), logger });
    const sub = createPolicySubscriber(config, {
      credentials: opts.credentials ?? (() => sidecar),
      hello: { sidecarId: 'frontend-1', address: '10.1.2.3:15006', labels: { version: 'v1' } },
      store,
      clock,
      random: () => 0.5,
      logger,
    });
    const seen: EffectiveSnapshot[] = [];
    sub.onSnapshot((e) => seen.push(e));
    const abort = new AbortController();
    if (opts.start !== false) running.push({ abort, done: sub.run(abort.signal), store });
    return { sub, store, clock, lines, seen, abort };
  }

  const state = (sub: PolicySubscriber) => sub.current();

  it('subscribes, applies the snapshot and ACKs it; the server sees the sidecar identity from its certificate', async () => {
    const s = await server();
    const { sub, seen } = await subscriber([s.address]);
    const ack = await waitFor('the ACK', () => s.acks[0]);
    expect(ack).toEqual({ version: 'v1', accepted: true, errors: [], peer: SIDECAR_ID });
    expect(s.streams[0]).toMatchObject({
      peer: SIDECAR_ID,
      hello: { sidecarId: 'frontend-1', address: '10.1.2.3:15006', labels: { version: 'v1' }, currentVersion: '', destinations: ['orders.shop'] },
    });
    expect(state(sub)).toMatchObject({ version: 'v1', source: 'server', degraded: false, hasPolicy: true, connectedTo: s.address, serverId: 'fake' });
    expect(sub.ready()).toMatchObject({ ok: true, state: 'ok' });
    expect(seen.at(-1)).toMatchObject({ version: 'v1', source: 'server', refused: [] });
    expect(seen.at(-1)!.documents.map((d) => d.metadata.name)).toEqual(['allow-frontend']);
    // proto3 weight 0 means "unset".
    expect(seen.at(-1)!.services[0]!.endpoints[0]).toEqual({ address: '127.0.0.1:15006', labels: { version: 'v1' }, weight: 1 });
  });

  it("receives a Filter's JavaScript with the document over gRPC and keeps it in the disk copy", async () => {
    const s = await server();
    const { store } = await subscriber([s.address]);
    await waitFor('the first ACK', () => s.acks[0]);
    const javascript = 'export default (call         ) => ({ allow: true });';
    s.push(wireSnapshot('v2', [{ ...doc('Filter', 'own', { source: 'export default (call: unknown) => ({ allow: true });' }), javascript }]));
    expect(await waitFor('the ACK of v2', () => s.acks[1])).toMatchObject({ version: 'v2', accepted: true });
    await store.flush();
    const persisted = JSON.parse(await readFile(snapshotFileFor(stateDir!, { service: 'frontend', namespace: 'shop' }), 'utf8')) as { documents: Array<{ kind: string; javascript?: string }> };
    expect(persisted.documents).toEqual([expect.objectContaining({ kind: 'Filter', javascript })]);
  });

  it('NACKs an invalid document with its reason, keeps its last good copy and applies the rest', async () => {
    const s = await server();
    const { sub, seen } = await subscriber([s.address]);
    await waitFor('the first ACK', () => s.acks[0]);
    s.push(wireSnapshot('v2', [doc('AuthorizationPolicy', 'allow-frontend', { action: 'PERMIT' }), doc('IPAccessPolicy', 'block-lab', { deny: ['10.99.0.0/16'] })]));
    const nack = await waitFor('the NACK', () => s.acks[1]);
    expect(nack).toEqual({
      version: 'v2',
      accepted: false,
      errors: [{ document: 'AuthorizationPolicy/shop/allow-frontend', field: 'spec.action', reason: 'expected one of ALLOW, DENY, AUDIT, got "PERMIT"' }],
      peer: SIDECAR_ID,
    });
    const applied = seen.at(-1)!;
    expect(applied.version).toBe('v2');
    expect(applied.documents.map((d) => [d.kind, d.spec])).toEqual([
      ['AuthorizationPolicy', { action: 'ALLOW', mode: 'enforce', rules: [], selector: {} }],
      ['IPAccessPolicy', { deny: ['10.99.0.0/16'], selector: {} }],
    ]);
    expect(applied.refused).toEqual([{ key: 'AuthorizationPolicy/shop/allow-frontend', kept: true }]);
    expect(sub.stats()).toMatchObject({ acks: 1, nacks: 1 });
    expect(sub.ready().detail).toContain('AuthorizationPolicy/shop/allow-frontend');
  });

  it('server killed: keeps its snapshot from the server, degraded only after maxStaleness; a fresh process boots from the disk copy', async () => {
    const s = await server();
    const first = await subscriber([s.address]);
    await waitFor('the ACK', () => s.acks[0]);
    await first.store.flush();
    s.kill();
    await waitFor('the stream to drop', () => state(first.sub)?.connectedTo === undefined);

    expect(state(first.sub)).toMatchObject({ version: 'v1', source: 'server', degraded: false });
    first.clock.advance(5 * 60_000 - 1_000);
    expect(state(first.sub)?.degraded).toBe(false);
    expect(first.sub.ready()).toMatchObject({ ok: true, state: 'ok' });
    first.clock.advance(2_000);
    expect(state(first.sub)).toMatchObject({ version: 'v1', source: 'server', degraded: true, hasPolicy: true });
    expect(first.sub.ready()).toMatchObject({ ok: true, state: 'degraded', detail: expect.stringContaining('not confirmed by a server') });
    expect(first.lines.filter((l) => String(l.msg).includes('stale'))).toHaveLength(1);
    first.abort.abort();

    // Fresh process state: new store, new subscriber, same stateDir, no server anywhere.
    const second = await subscriber([s.address]);
    const booted = await second.sub.first(AbortSignal.timeout(5_000));
    expect(booted).toMatchObject({ version: 'v1', source: 'disk', refused: [] });
    expect(booted.documents.map((d) => d.spec)).toEqual([{ action: 'ALLOW', mode: 'enforce', rules: [], selector: {} }]);
    expect(state(second.sub)).toMatchObject({ version: 'v1', source: 'disk', hasPolicy: true, connectedTo: undefined });
    await waitFor('a failed connection attempt', () => second.sub.stats().failures > 0);
    expect(second.sub.ready()).toMatchObject({ ok: true });
  });

  it('with no copy and no server: no policy, not ready under onNoPolicy: deny; ready only when allow is explicit', async () => {
    const dead = `127.0.0.1:${await closedPort()}`;
    const denying = await subscriber([dead]);
    await waitFor('a failed connection attempt', () => denying.sub.stats().failures > 0);
    expect(denying.sub.current()).toBeUndefined();
    expect(denying.sub.ready()).toMatchObject({ ok: false, state: 'no-policy', detail: expect.stringContaining('onNoPolicy: deny') });
    const allowing = await subscriber([dead], { config: { onNoPolicy: 'allow' } });
    await waitFor('a failed connection attempt', () => allowing.sub.stats().failures > 0);
    expect(allowing.sub.ready()).toMatchObject({ ok: true, state: 'no-policy', detail: expect.stringContaining('onNoPolicy: allow') });
  });

  it('fails over to the second address when the first is down', async () => {
    const dead = `127.0.0.1:${await closedPort()}`;
    const s = await server();
    const { sub } = await subscriber([dead, s.address]);
    await waitFor('the ACK', () => s.acks[0]);
    expect(state(sub)).toMatchObject({ source: 'server', connectedTo: s.address });
    expect(sub.stats().failures).toBeGreaterThanOrEqual(1);
    expect(sub.stats().lastError).toBeUndefined();
  });

  it('moves to another replica when its stream drops, resumes with its version and the rotated certificate', async () => {
    const a = await server();
    const b = await server();
    let creds = sidecar;
    const { sub } = await subscriber([a.address, b.address], { credentials: () => creds });
    await waitFor('the ACK from a', () => a.acks[0]);
    const firstSerial = a.streams[0]!.peerSerial;
    creds = await workloadCredentials(ca, 'shop', 'frontend');
    b.push(wireSnapshot('v2', [doc('Route', 'canary', { service: 'orders' })]));
    a.dropStreams();
    await waitFor('the ACK from b', () => b.acks[0]);
    expect(b.streams[0]!.hello.currentVersion).toBe('v1');
    expect(b.streams[0]!.peerSerial).toBe(creds.facts.serial);
    expect(b.streams[0]!.peerSerial).not.toBe(firstSerial);
    expect(state(sub)).toMatchObject({ version: 'v2', source: 'server', connectedTo: b.address });
  });

  it('refuses a server whose certificate carries another SPIFFE ID, and sends it nothing', async () => {
    const impostor = await server(await workloadCredentials(ca, 'meshgate-system', 'impostor'));
    const { sub } = await subscriber([impostor.address]);
    await waitFor('a refused connection', () => sub.stats().failures > 0);
    expect(sub.stats().lastError).toMatch(/spiffe:\/\/cluster\.local\/ns\/meshgate-system\/sa\/impostor/);
    expect(sub.stats().lastError).toContain('expected spiffe://cluster.local/ns/meshgate-system/sa/policy-server');
    expect(impostor.streams).toHaveLength(0);
    expect(sub.current()).toBeUndefined();
    expect(sub.ready()).toMatchObject({ ok: false, state: 'no-policy' });
  });

  it('a server that names the expected identity through config is accepted', async () => {
    const other = await server(await workloadCredentials(ca, 'meshgate-system', 'policy-server-canary'));
    const { sub } = await subscriber([other.address], { config: { expectedIdentity: 'spiffe://cluster.local/ns/meshgate-system/sa/policy-server-canary' } });
    await waitFor('the ACK', () => other.acks[0]);
    expect(state(sub)?.source).toBe('server');
  });

  it('without a workload certificate it waits, and connects once there is one', async () => {
    const s = await server();
    let creds: WorkloadCredentials | undefined;
    const { sub } = await subscriber([s.address], { credentials: () => creds });
    await waitFor('a failed attempt', () => sub.stats().failures > 0);
    expect(sub.stats().lastError).toBe('no workload certificate yet');
    creds = sidecar;
    await waitFor('the ACK', () => s.acks[0]);
  });
});
