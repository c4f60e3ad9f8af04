import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import type { Verdict } from '../../../src/core/verdict.ts';
import { createAuthzFilter } from '../../../src/filters/authz/authz-filter.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';

function call(over: { principal?: string; method?: string; path?: string; address?: string; authority?: string } = {}): CallContext {
  return {
    id: 'r1',
    direction: 'inbound',
    startedAt: 0,
    method: over.method ?? 'GET',
    path: over.path ?? '/orders/1',
    query: '',
    authority: over.authority ?? 'orders',
    headers: {},
    httpVersion: '1.1',
    isGrpc: false,
    source: { address: over.address ?? '10.0.0.5', port: 1234, principal: over.principal },
    destination: { service: 'orders', namespace: 'shop' },
    annotations: { retries: 0 },
  };
}

function policy(name: string, spec: Record<string, unknown>): PolicyDocument {
  return { apiVersion: 'meshgate.dev/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec } as PolicyDocument;
}

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
const ADMIN = 'spiffe://cluster.local/ns/ops/sa/admin';

const allowFrontendReads = policy('allow-frontend', {
  action: 'ALLOW',
  rules: [{ name: 'reads', from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET'], paths: ['/orders/*'] }] }],
});
const denyAdminPath = policy('deny-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] });

const outcome = (v: Verdict): string => (v.kind === 'continue' ? 'allow' : `${v.code}${v.rule ? ` ${v.rule}` : ''}`);

describe('authz filter', () => {
  const cases: Array<[string, PolicyDocument[], Parameters<typeof call>[0], string]> = [
    ['no policy: deny by default', [], { principal: FRONTEND }, 'authz.denied'],
    ['ALLOW rule matches', [allowFrontendReads], { principal: FRONTEND }, 'allow'],
    ['ALLOW: wrong method', [allowFrontendReads], { principal: FRONTEND, method: 'DELETE' }, 'authz.denied'],
    ['ALLOW: wrong principal', [allowFrontendReads], { principal: ADMIN }, 'authz.denied'],
    ['ALLOW: no principal (plaintext caller)', [allowFrontendReads], {}, 'authz.denied'],
    ['ALLOW: glob is one segment', [allowFrontendReads], { principal: FRONTEND, path: '/orders/1/items' }, 'allow'],
    ['DENY before ALLOW', [allowFrontendReads, denyAdminPath], { principal: FRONTEND, path: '/admin/x' }, 'authz.denied shop/deny-admin#admin'],
    ['namespace wildcard', [policy('ns', { rules: [{ from: [{ namespaces: ['shop'] }] }] })], { principal: FRONTEND }, 'allow'],
    ['namespace mismatch', [policy('ns', { rules: [{ from: [{ namespaces: ['shop'] }] }] })], { principal: ADMIN }, 'authz.denied'],
    ['principal prefix wildcard', [policy('p', { rules: [{ from: [{ principals: ['spiffe://cluster.local/ns/shop/*'] }] }] })], { principal: FRONTEND }, 'allow'],
    ['ipBlocks', [policy('ip', { rules: [{ from: [{ ipBlocks: ['10.0.0.0/8'] }] }] })], { address: '10.1.2.3' }, 'allow'],
    ['notIpBlocks', [policy('ip', { rules: [{ from: [{ notIpBlocks: ['10.0.0.0/8'] }] }] })], { address: '10.1.2.3' }, 'authz.denied'],
    ['ALLOW with a JWT condition admits no one yet', [policy('jwt', { rules: [{ from: [{ requestPrincipals: ['*'] }] }] })], { principal: FRONTEND }, 'authz.denied'],
    ['DENY with a JWT condition denies (fail safe)', [allowFrontendReads, policy('jwt', { action: 'DENY', rules: [{ when: [{ key: 'request.auth.claims[x]', values: ['1'] }] }] })], { principal: FRONTEND }, 'authz.denied shop/jwt#0'],
    ['shadow policies are not enforced', [allowFrontendReads, policy('shadow', { action: 'DENY', mode: 'shadow', rules: [{}] })], { principal: FRONTEND }, 'allow'],
  ];
  for (const [name, docs, input, expected] of cases) {
    it(name, () => {
      const filter = createAuthzFilter(docs, { allowWhenNoPolicy: false });
      expect(outcome(filter.onRequest(call(input)) as Verdict)).toBe(expected);
    });
  }

  it('allow-by-default switch admits calls when no ALLOW policy applies, but DENY still denies', () => {
    const filter = createAuthzFilter([denyAdminPath], { allowWhenNoPolicy: true });
    expect(outcome(filter.onRequest(call()) as Verdict)).toBe('allow');
    expect(outcome(filter.onRequest(call({ path: '/admin' })) as Verdict)).toBe('authz.denied shop/deny-admin#admin');
  });

  it('records the deciding rule on the call', () => {
    const c = call({ principal: FRONTEND });
    createAuthzFilter([allowFrontendReads], { allowWhenNoPolicy: false }).onRequest(c);
    expect(c.annotations).toMatchObject({ decision: 'allow', rule: 'shop/allow-frontend#reads' });
  });
});
