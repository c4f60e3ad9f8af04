import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { ServiceConfig } from '../../../src/config/sidecar-schema.ts';
import { registryServiceSchema } from '../../../src/config/sidecar-schema.ts';
import { systemClock } from '../../../src/core/clock.ts';
import { createServiceRegistry } from '../../../src/outbound/service-registry.ts';
import { createReadBuffer } from '../../../src/proxy/socket-reads.ts';

const svc = (name: string, addresses: string[], extra: Record<string, unknown> = {}): ServiceConfig =>
  registryServiceSchema.parse({ name, namespace: 'shop', endpoints: addresses.map((address) => ({ address })), ...extra });

describe('service registry updates (registry pushes)', () => {
  it('adds and removes endpoints in place, keeping the cluster and the endpoints that stay', async () => {
    const registry = createServiceRegistry([svc('orders', ['127.0.0.1:1001', '127.0.0.1:1002'])], { clock: systemClock, random: Math.random, idleTimeoutMs: 1000, readBuffer: createReadBuffer() });
    const cluster = registry.cluster('orders', 'shop')!;
    const kept = cluster.endpoints().find((e) => e.address === '127.0.0.1:1002')!;
    registry.update([svc('orders', ['127.0.0.1:1002', '127.0.0.1:1003'])]);
    expect(registry.cluster('orders', 'shop')).toBe(cluster);
    expect(
      cluster
        .endpoints()
        .map((e) => e.address)
        .sort(),
    ).toEqual(['127.0.0.1:1002', '127.0.0.1:1003']);
    expect(cluster.endpoints()).toContain(kept);
    await registry.close();
  });

  it('replaces a service whose settings changed, adds new services and drops missing ones', async () => {
    const registry = createServiceRegistry([svc('orders', ['127.0.0.1:1001']), svc('billing', ['127.0.0.1:2001'])], {
      clock: systemClock,
      random: Math.random,
      idleTimeoutMs: 1000,
      readBuffer: createReadBuffer(),
    });
    const before = registry.cluster('orders', 'shop');
    registry.update([svc('orders', ['127.0.0.1:1001'], { loadBalancer: 'round_robin' }), svc('payments', [])]);
    expect(registry.cluster('orders', 'shop')).not.toBe(before);
    expect(registry.cluster('orders', 'shop')!.config.loadBalancer).toBe('round_robin');
    expect(registry.lookup('billing', 'shop')).toBeUndefined();
    expect(registry.cluster('payments', 'shop')!.endpoints()).toEqual([]);
    expect(registry.cluster('payments', 'shop')!.pick('http1', undefined, new Set())).toBeUndefined();
    await registry.close();
  });

  it('compiles the versions given with an update, keeping the cluster when only they change', async () => {
    const registry = createServiceRegistry([svc('orders', ['127.0.0.1:1001'])], { clock: systemClock, random: Math.random, idleTimeoutMs: 1000, readBuffer: createReadBuffer() });
    const cluster = registry.cluster('orders', 'shop');
    expect(registry.lookup('orders', 'shop')!.versions).toBeUndefined();
    registry.update([svc('orders', ['127.0.0.1:1001'])], new Map([['orders.shop', [{ name: 'v1', subset: { version: 'v1' } }]]]));
    expect(registry.cluster('orders', 'shop')).toBe(cluster);
    expect(registry.lookup('orders', 'shop')!.versions!.byName('v1')?.subset).toEqual({ version: 'v1' });
    registry.update([svc('orders', ['127.0.0.1:1001'])], new Map([['orders.shop', []]]));
    expect(registry.lookup('orders', 'shop')!.versions).toBeUndefined();
    await registry.close();
  });
});

describe('service registry close', () => {
  it('waits for a call in flight, and with force ends it: a drain out of time cannot hang on an upstream that never answers', async () => {
    const seen = new Set<net.Socket>();
    let requestSeen!: () => void;
    const arrived = new Promise<void>((resolve) => (requestSeen = resolve));
    const silent = net.createServer((socket) => {
      seen.add(socket);
      socket.once('data', () => requestSeen()); // reads the request, never answers
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    const registry = createServiceRegistry([svc('orders', [`127.0.0.1:${port}`])], { clock: systemClock, random: Math.random, idleTimeoutMs: 60_000, readBuffer: createReadBuffer() });
    try {
      const target = registry.cluster('orders', 'shop')!.pick('http1', undefined, new Set())!;
      const settled = new Promise<string>((resolve) =>
        target.dispatcher.dispatch(
          { path: '/orders', method: 'GET', headers: { host: 'orders' }, headersTimeout: 0, bodyTimeout: 0 },
          { onResponseEnd: () => resolve('answered'), onResponseError: () => resolve('ended') },
        ),
      );
      await arrived;
      let closed = false;
      const polite = registry.close().then(() => (closed = true));
      await new Promise((resolve) => setImmediate(resolve));
      expect(closed).toBe(false); // the call is still in flight: a plain close waits for it
      await registry.close({ force: true });
      expect(await settled).toBe('ended');
      await polite;
    } finally {
      for (const socket of seen) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});
