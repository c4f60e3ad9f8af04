import { describe, expect, it } from 'vitest';
import { documentApplies, selectDocuments } from '../../../src/policy/selector.ts';
import type { PolicyDocument, WorkloadRef } from '../../../src/policy/types.ts';

function policy(namespace: string, services?: string[]): PolicyDocument {
  return {
    apiVersion: 'meshgate.dev/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: `p-${namespace}-${services?.join('-') ?? 'all'}`, namespace },
    spec: { selector: services === undefined ? {} : { services } },
  };
}

const orders: WorkloadRef = { service: 'orders', namespace: 'shop' };

describe('documentApplies', () => {
  it.each([
    ['its namespace, no selector', policy('shop'), true],
    ['its namespace, an empty services list', policy('shop', []), true],
    ['its namespace, its service listed', policy('shop', ['cart', 'orders']), true],
    ['its namespace, other services only', policy('shop', ['cart']), false],
    ['another namespace', policy('billing'), false],
    ['another namespace listing its service name', policy('billing', ['orders']), false],
    ['the mesh root namespace, no selector', policy('meshgate-system'), true],
    ['the mesh root namespace, its service name', policy('meshgate-system', ['orders']), true],
    ['the mesh root namespace, other services', policy('meshgate-system', ['cart']), false],
  ])('%s -> %s', (_name, doc, expected) => {
    expect(documentApplies(doc, orders)).toBe(expected);
  });

  it('treats a document without selector as namespace-wide', () => {
    const bare: PolicyDocument = { apiVersion: 'meshgate.dev/v1', kind: 'Route', metadata: { name: 'r', namespace: 'shop' }, spec: {} };
    expect(documentApplies(bare, orders)).toBe(true);
  });
});

describe('selectDocuments', () => {
  it('keeps the input order, for documents and for entries holding one', () => {
    const docs = [policy('shop', ['cart']), policy('meshgate-system'), policy('billing'), policy('shop')];
    expect(selectDocuments(docs, orders)).toEqual([docs[1], docs[3]]);
    const entries = docs.map((document, i) => ({ document, digest: String(i) }));
    expect(selectDocuments(entries, orders).map((e) => e.digest)).toEqual(['1', '3']);
  });
});
