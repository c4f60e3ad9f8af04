import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import type { Hello, PolicyClient, WireSnapshot } from '../../src/policy/policy-api.ts';
import { createPolicyClient, policyChannelCredentials, policyServerSpiffeId } from '../../src/policy/policy-api.ts';
import type { PolicyHarness, TestPolicyServer, TestSubscriber } from './policy-server-harness.ts';
import { createPolicyHarness, eventually, openSubscriber, TRUST_DOMAIN } from './policy-server-harness.ts';

/*
 * Availability: two replicas pointed at one policy folder (and so one shared
 * registry folder) serve the same state under the same versions, and a
 * sidecar-like client that loses its replica resumes on the other with no
 * version change.
 */

const authz = (namespace: string, name: string, services: string[]): string =>
  `apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n  selector:\n    services: [${services.join(', ')}]\n  rules:\n    - to:\n        - methods: [GET]\n`;

/** A client that keeps one subscription alive across replicas: on a stream end it moves to the next address. */
function failoverSubscriber(addresses: readonly string[], identity: WorkloadCredentials, hello: Hello) {
  const snapshots: Array<WireSnapshot & { via: string }> = [];
  const clients: PolicyClient[] = [];
  let current: TestSubscriber | undefined;
  let index = 0;
  let stopped = false;
  const connect = (): void => {
    const address = addresses[index % addresses.length]!;
    const client = createPolicyClient(address, policyChannelCredentials(identity, policyServerSpiffeId(TRUST_DOMAIN)));
    clients.push(client);
    const last = snapshots.at(-1)?.version ?? '';
    const sub = openSubscriber(client, { ...hello, currentVersion: last }, true);
    current = sub;
    sub.stream.on('data', (s: WireSnapshot) => snapshots.push({ ...s, via: address }));
    void sub.ended.then(() => {
      if (stopped) return;
      index++;
      connect();
    });
  };
  connect();
  return {
    snapshots,
    close() {
      stopped = true;
      current?.close();
      for (const c of clients) c.close();
    },
  };
}

describe('policy-server replicas', () => {
  let h: PolicyHarness;
  let a: TestPolicyServer;
  let b: TestPolicyServer;
  let orders: WorkloadCredentials;
  let frontend: WorkloadCredentials;

  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/orders.yaml', authz('shop', 'orders-get', ['orders']));
    await h.write('shop/frontend.yaml', authz('shop', 'frontend-get', ['frontend']));
    [a, b] = await Promise.all([h.start(), h.start()]);
    [orders, frontend] = await Promise.all([h.identity('shop', 'orders'), h.identity('shop', 'frontend')]);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('two replicas give one workload the same version, registrations included, whichever holds the stream', async () => {
    expect(a.server.serverId).not.toBe(b.server.serverId);
    // An orders sidecar on each replica: each registry must show both.
    const onA = a.subscribe(orders, { sidecarId: 'orders-a', address: '10.0.0.1:15006' });
    const onB = b.subscribe(orders, { sidecarId: 'orders-b', address: '10.0.0.2:15006' });
    const watchA = a.subscribe(frontend, { sidecarId: 'frontend-a', destinations: ['orders.shop'] });
    const watchB = b.subscribe(frontend, { sidecarId: 'frontend-b', destinations: ['orders.shop'] });
    const both = (s: WireSnapshot): boolean => s.services[0]?.endpoints.length === 2;
    const [fromA, fromB] = await Promise.all([watchA.until(both), watchB.until(both)]);
    expect(fromA.version).toBe(fromB.version);
    expect(fromA.services).toEqual(fromB.services);
    expect(fromA.documents).toEqual(fromB.documents);
    expect([fromA.serverId, fromB.serverId]).toEqual([a.server.serverId, b.server.serverId]);

    // A sidecar leaving one replica leaves both registries.
    onB.close();
    const [lessA, lessB] = await Promise.all([watchA.until((s) => s.services[0]?.endpoints.length === 1), watchB.until((s) => s.services[0]?.endpoints.length === 1)]);
    expect(lessA.version).toBe(lessB.version);
    expect(lessA.services[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:15006']);
    for (const s of [onA, watchA, watchB]) s.close();
  });

  it('a write through one replica reaches a subscriber of the other under the same version', async () => {
    const subA = a.subscribe(orders, { sidecarId: 'orders-write-a' });
    const subB = b.subscribe(orders, { sidecarId: 'orders-write-b' });
    // The previous test's sidecars have left; both replicas settle on an empty registry.
    const settled = (s: WireSnapshot): boolean => s.services.length === 0;
    const [beforeA, beforeB] = await Promise.all([subA.until(settled), subB.until(settled)]);
    expect(beforeA.version).toBe(beforeB.version);
    const started = performance.now();
    const put = await a.server.store.put(authz('shop', 'orders-post', ['orders']));
    expect(put.ok).toBe(true);
    const onB = await subB.until((s) => s.version !== beforeB.version, 2_000);
    console.log(`policy-server replicas: put on A -> snapshot from B in ${(performance.now() - started).toFixed(1)} ms`);
    const onA = await subA.until((s) => s.version !== beforeA.version, 2_000);
    expect(onB.version).toBe(onA.version);
    expect(onB.documents.map((d) => d.name)).toEqual(['orders-get', 'orders-post']);
    subA.close();
    subB.close();
  });

  it('a sidecar-like client failing over from one replica to the other gets the same version', async () => {
    const client = failoverSubscriber([`127.0.0.1:${a.server.grpcPort}`, `127.0.0.1:${b.server.grpcPort}`], orders, { sidecarId: 'orders-failover', address: '10.0.0.7:15006' });
    await eventually(() => client.snapshots.length >= 1, 5_000, 'first snapshot from A');
    const first = client.snapshots[0]!;
    expect(first.via).toBe(`127.0.0.1:${a.server.grpcPort}`);
    expect(first.serverId).toBe(a.server.serverId);
    // The client's own endpoint reaches the services it is sent a moment after it registered (through the
    // replicas' shared registry), so a first snapshot may be followed by one that lists it: the settled one.
    const listsItself = (snapshot: WireSnapshot): boolean => snapshot.services.some((service) => service.name === 'orders' && service.endpoints.some((e) => e.address === '10.0.0.7:15006'));
    const inSync = (replica: TestPolicyServer) => () => {
      const sub = replica.server.directory.subscribers().find((s) => s.sidecarId === 'orders-failover');
      return sub?.ackedVersion !== undefined && sub.ackedVersion === sub.sentVersion;
    };
    await eventually(() => listsItself(client.snapshots.at(-1)!), 5_000, 'a snapshot from A listing the client');
    await eventually(inSync(a));
    const lastFromA = client.snapshots.at(-1)!;

    // Replica A goes away: it ends every stream with UNAVAILABLE.
    await a.close();
    const fromB = () => client.snapshots.filter((s) => s.serverId === b.server.serverId).at(-1);
    await eventually(() => fromB() !== undefined && listsItself(fromB()!), 5_000, 'a snapshot from B listing the client');
    const second = fromB()!;
    expect(second.version).toBe(lastFromA.version);
    expect(second.documents).toEqual(lastFromA.documents);
    expect(second.services).toEqual(lastFromA.services);
    await eventually(inSync(b));
    expect(b.server.directory.subscribers().find((s) => s.sidecarId === 'orders-failover')?.ackedVersion).toBe(lastFromA.version);
    // Its endpoint moved with it: B registered it from the new stream, A's file is gone.
    expect(
      b.server.directory
        .registry()
        .find((s) => s.name === 'orders')
        ?.endpoints.map((e) => e.address),
    ).toContain('10.0.0.7:15006');
    client.close();
  });
});
