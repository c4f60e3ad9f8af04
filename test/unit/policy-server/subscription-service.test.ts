import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../../src/core/clock.ts';
import type { WireSnapshot } from '../../../src/policy/policy-api.ts';
import { createPolicyServerMetrics } from '../../../src/policy-server/policy-server-metrics.ts';
import { createServiceRegistry } from '../../../src/policy-server/service-registry.ts';
import type { BuiltSnapshot, SnapshotBuilder } from '../../../src/policy-server/snapshot-builder.ts';
import type { SubscribeCall } from '../../../src/policy-server/subscription-service.ts';
import { createSubscriptionService } from '../../../src/policy-server/subscription-service.ts';
import { issueCert } from '../../helpers/mesh-pki.ts';

/** A stand-in for a grpc-js server duplex stream: records writes, and can be made to report a full buffer. */
class FakeCall extends EventEmitter {
  readonly written: Array<WireSnapshot | Buffer> = [];
  full = false;
  status: { code: number; details: string } | undefined;
  private readonly raw: Buffer | undefined;
  constructor(raw: Buffer | undefined) {
    super();
    this.raw = raw;
    this.on('error', (err: { code: number; details: string }) => {
      this.status = err;
    });
  }
  getAuthContext() {
    return this.raw ? { transportSecurityType: 'ssl', sslPeerCertificate: { raw: this.raw } } : {};
  }
  getPeer() {
    return 'ipv4:127.0.0.1:5555';
  }
  write(message: WireSnapshot | Buffer): boolean {
    this.written.push(message);
    return !this.full;
  }
  end(): void {
    this.emit('finish');
  }
  versions(): string[] {
    return this.written.map((m) => (m as WireSnapshot).version);
  }
}

/** Versions come from a counter the test moves: "a change" is version++. */
function counterBuilder(): SnapshotBuilder & { version: number } {
  const b = {
    version: 1,
    build(): BuiltSnapshot {
      const version = `v${b.version}`;
      return { version, message: { version, documents: [], services: [], serverId: 'test' }, encoded: undefined };
    },
    invalidate() {},
  };
  return b;
}

describe('subscription service', () => {
  let raw: Buffer;
  let foreign: Buffer;
  beforeAll(async () => {
    raw = Buffer.from(new X509Certificate((await issueCert({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/orders' })).certPem).raw);
    foreign = Buffer.from(new X509Certificate((await issueCert({ spiffeId: 'spiffe://elsewhere.example/ns/shop/sa/orders' })).certPem).raw);
  });

  const setup = () => {
    const builder = counterBuilder();
    const registry = createServiceRegistry([]);
    const metrics = createPolicyServerMetrics({ defaultMetrics: false });
    const service = createSubscriptionService(
      { trustDomain: 'cluster.local', serverId: 'test', helloTimeoutMs: 10_000, maxSubscribers: 2, debounceMs: 1 },
      { builder, registry, metrics, logger: pino({ level: 'silent' }), clock: systemClock },
    );
    return { builder, registry, metrics, service };
  };
  const hello = (sidecarId: string, address = '') => ({ message: 'hello' as const, hello: { sidecarId, address, labels: {}, currentVersion: '', destinations: [] } });

  it('sends only when the version changed, and after a full buffer only the newest snapshot on drain', () => {
    const { builder, service } = setup();
    const call = new FakeCall(raw);
    service.subscribe(call as unknown as SubscribeCall);
    call.emit('data', hello('a'));
    expect(call.versions()).toEqual(['v1']);
    service.pushNow();
    expect(call.versions()).toEqual(['v1']);

    call.full = true;
    builder.version = 2;
    service.pushNow();
    expect(call.versions()).toEqual(['v1', 'v2']);
    builder.version = 3;
    service.pushNow();
    builder.version = 4;
    service.pushNow();
    expect(call.versions()).toEqual(['v1', 'v2']);
    call.full = false;
    call.emit('drain');
    expect(call.versions()).toEqual(['v1', 'v2', 'v4']);
    expect(service.subscribers()[0]!.sentVersion).toBe('v4');
  });

  it('records ACKs of versions sent on the stream and ignores the others', () => {
    const { service } = setup();
    const call = new FakeCall(raw);
    service.subscribe(call as unknown as SubscribeCall);
    call.emit('data', hello('a'));
    call.emit('data', { message: 'ack', ack: { version: 'never-sent', accepted: true, errors: [] } });
    expect(service.subscribers()[0]!.ackedVersion).toBeUndefined();
    call.emit('data', { message: 'ack', ack: { version: 'v1', accepted: true, errors: [] } });
    expect(service.subscribers()[0]!.ackedVersion).toBe('v1');
  });

  it('refuses a peer without a verified certificate, or of another trust domain', async () => {
    const { service, metrics } = setup();
    const none = new FakeCall(undefined);
    service.subscribe(none as unknown as SubscribeCall);
    expect(none.status).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'no verified client certificate of trust domain cluster.local' });
    const other = new FakeCall(foreign);
    service.subscribe(other as unknown as SubscribeCall);
    expect(other.status).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'client certificate has no SPIFFE ID of trust domain cluster.local' });
    expect(service.subscribers()).toEqual([]);
    expect((await metrics.refusedStreams.get()).values).toEqual([{ labels: { reason: 'no_peer_identity' }, value: 2 }]);
  });

  it('refuses subscribers beyond maxSubscribers, and frees the slot and the endpoint when a stream ends', () => {
    const { service, registry } = setup();
    const calls = [new FakeCall(raw), new FakeCall(raw), new FakeCall(raw)];
    calls.forEach((c, i) => {
      service.subscribe(c as unknown as SubscribeCall);
      c.emit('data', hello(`s${i}`, `10.0.0.${i}:1`));
    });
    expect(calls[2]!.status?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(registry.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.0:1', '10.0.0.1:1']);
    calls[0]!.emit('cancelled');
    expect(service.subscribers().map((s) => s.sidecarId)).toEqual(['s1']);
    expect(registry.services()[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:1']);
    calls[1]!.emit('end');
    expect(service.subscribers()).toEqual([]);
    expect(registry.services()).toEqual([]);
  });

  it('validates the Hello: labels, destinations, sidecar id', () => {
    const { service } = setup();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ sidecarId: '' }, 'hello.sidecar_id: expected 1 to 253 printable ASCII characters without spaces'],
      [{ sidecarId: 'a b' }, 'hello.sidecar_id: expected 1 to 253 printable ASCII characters without spaces'],
      [{ destinations: ['orders'] }, 'hello.destinations: expected name.namespace, got "orders"'],
      [{ labels: { 'bad key!': 'x' } }, 'hello.labels: key "bad key!" is not a label name'],
      [{ address: '10.0.0.1:70000' }, 'hello.address: expected host:port, got "10.0.0.1:70000"'],
    ];
    for (const [over, details] of cases) {
      const call = new FakeCall(raw);
      service.subscribe(call as unknown as SubscribeCall);
      call.emit('data', { message: 'hello', hello: { ...hello('ok').hello, ...over } });
      expect(call.status).toEqual({ code: grpc.status.INVALID_ARGUMENT, details });
    }
  });
});
