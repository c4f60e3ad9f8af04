import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../../src/policy/parse-documents.ts';
import { canonicalJson, compileSnapshot, documentDigest, snapshotVersion } from '../../../src/policy/snapshot.ts';
import type { PolicyDocument, RegistryService, WorkloadRef } from '../../../src/policy/types.ts';
import { doc } from './helpers.ts';

const policies = (methods = 'GET', elsewhere = '{}') =>
  [
    doc('AuthorizationPolicy', `rules: [{ to: [{ methods: [${methods}] }] }]`, '{ name: allow-reads, namespace: shop }'),
    doc('IPAccessPolicy', 'deny: [10.0.0.0/8]', '{ name: block, namespace: meshgate-system }'),
    doc('RateLimitPolicy', 'selector: { services: [cart] }\nrules: [{ name: a, key: [source.ip], limit: { requests: 5, per: 1s } }]', '{ name: cart-only, namespace: shop }'),
    doc('AuthorizationPolicy', elsewhere, '{ name: elsewhere, namespace: billing }'),
    doc(
      'Route',
      'selector: { services: [orders] }\nservice: payments.billing\nroutes: [{ backends: [{ service: payments-v2, weight: 1 }, { service: fraud.risk, weight: 1 }] }]',
      '{ name: to-payments, namespace: shop }',
    ),
  ].join('---\n');

const parse = (text: string) => parsePolicyText(text, 'p.yaml').documents;
const documents = parse(policies());
const orders: WorkloadRef = { service: 'orders', namespace: 'shop' };

function service(name: string, namespace: string, addresses: string[] = ['10.0.0.1:15006']): RegistryService {
  return {
    name,
    namespace,
    endpoints: addresses.map((address) => ({ address, labels: { version: 'v1', zone: 'a' }, weight: 1 })),
    identities: [`spiffe://cluster.local/ns/${namespace}/sa/${name}`],
    external: false,
  };
}

const registry = [
  service('payments', 'billing', ['10.0.0.2:15006', '10.0.0.1:15006']),
  service('payments-v2', 'billing'),
  service('fraud', 'risk'),
  service('cart', 'shop'),
  service('search', 'shop'),
];

describe('canonicalJson', () => {
  it('sorts keys at every level, keeps array order, drops undefined members', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined }, é: true, A: null })).toBe('{"A":null,"a":{"d":[3,{"y":2,"z":1}]},"b":1,"é":true}');
  });

  it('refuses values JSON cannot carry', () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(TypeError);
    expect(() => canonicalJson(10n)).toThrow(TypeError);
  });
});

describe('documentDigest', () => {
  it('is the sha256 hex of the canonical JSON, whatever the key order', () => {
    const a: PolicyDocument = { apiVersion: 'meshgate.dev/v1', kind: 'Route', metadata: { name: 'r', namespace: 'shop' }, spec: { service: 'x', routes: [] } };
    const b = { spec: { routes: [], service: 'x' }, metadata: { namespace: 'shop', name: 'r' }, kind: 'Route', apiVersion: 'meshgate.dev/v1' } as PolicyDocument;
    expect(documentDigest(a)).toBe(createHash('sha256').update(canonicalJson(a)).digest('hex'));
    expect(documentDigest(a)).toBe(documentDigest(b));
    expect(documents[0]!.digest).toBe(documentDigest(documents[0]!.document));
  });
});

describe('compileSnapshot', () => {
  it('holds the documents that apply to the workload, sorted by key', () => {
    const snapshot = compileSnapshot(documents, registry, orders);
    expect(snapshot.documents.map((d) => `${d.kind}/${d.metadata.namespace}/${d.metadata.name}`)).toEqual([
      'AuthorizationPolicy/shop/allow-reads',
      'IPAccessPolicy/meshgate-system/block',
      'Route/shop/to-payments',
    ]);
    expect(snapshot.version).toMatch(/^[0-9a-f]{16}$/);
  });

  it('gives the same version for the same content in any order (two replicas agree)', () => {
    const one = compileSnapshot(documents, registry, orders);
    const shuffledRegistry = [...registry].reverse().map((s) => ({ ...s, endpoints: [...s.endpoints].reverse(), identities: [...s.identities].reverse() }));
    const two = compileSnapshot(
      [...documents].reverse().map((d) => d.document),
      shuffledRegistry,
      orders,
    );
    expect(two.version).toBe(one.version);
    expect(two).toEqual(one);
  });

  it('changes the version when a document that applies changes, not when one elsewhere does', () => {
    const before = compileSnapshot(documents, registry, orders).version;
    expect(compileSnapshot(parse(policies('GET, HEAD')), registry, orders).version).not.toBe(before);
    const elsewhere = parse(policies('GET', 'action: DENY'));
    expect(elsewhere.find((d) => d.key === 'AuthorizationPolicy/billing/elsewhere')!.document.spec.action).toBe('DENY');
    expect(compileSnapshot(elsewhere, registry, orders).version).toBe(before);
  });

  it('changes the version when the registry changes', () => {
    const before = compileSnapshot(documents, registry, orders).version;
    const moved = registry.map((s) => (s.name === 'cart' ? service('cart', 'shop', ['10.0.0.9:15006']) : s));
    expect(compileSnapshot(documents, moved, orders).version).not.toBe(before);
  });

  it('narrows the registry to the destinations and the backends of their Routes', () => {
    const snapshot = compileSnapshot(documents, registry, orders, ['payments.billing', 'cart']);
    expect(snapshot.services.map((s) => `${s.name}.${s.namespace}`)).toEqual(['payments.billing', 'payments-v2.billing', 'fraud.risk', 'cart.shop']);
    expect(snapshot.services[0]!.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:15006', '10.0.0.2:15006']);
    expect(compileSnapshot(documents, registry, orders, []).services).toHaveLength(registry.length);
  });

  it("keeps the workload's own service with its destinations: its replicas split a global rate limit while Redis is away", () => {
    const withOrders = [...registry, service('orders', 'shop', ['10.0.0.7:15006', '10.0.0.8:15006'])];
    const snapshot = compileSnapshot(documents, withOrders, orders, ['cart']);
    expect(snapshot.services.map((s) => `${s.name}.${s.namespace}`)).toEqual(['cart.shop', 'orders.shop']);
  });

  it('keeps one copy of a key given twice, the same on every replica', () => {
    const twice = [...documents, { document: documents[0]!.document, digest: '0'.repeat(64) }];
    const a = compileSnapshot(twice, registry, orders);
    const b = compileSnapshot([...twice].reverse(), registry, orders);
    expect(a.documents).toHaveLength(3);
    expect(b).toEqual(a);
  });

  it('versions the (key, digest) pairs and services: snapshotVersion agrees with compileSnapshot', () => {
    const snapshot = compileSnapshot(documents, [], orders);
    const applied = documents.filter((d) => snapshot.documents.includes(d.document));
    expect(snapshotVersion(applied, [])).toBe(snapshot.version);
  });
});
