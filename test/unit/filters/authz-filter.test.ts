import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../src/core/verdict.ts';
import { compileAuthorization } from '../../../src/filters/authz/authz-engine.ts';
import { createAuthzFilter } from '../../../src/filters/authz/authz-filter.ts';
import { authzRequestOf } from '../../../src/filters/authz/authz-request.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { createSidecarMetrics } from '../../../src/telemetry/metrics.ts';
import { authzRuntime } from '../../helpers/filter-runtimes.ts';
import type { CallInput } from './authz-fixtures.ts';
import { ADMIN, call, FRONTEND, fixedRandom, policy } from './authz-fixtures.ts';

const allowFrontendReads = policy('allow-frontend', {
  action: 'ALLOW',
  rules: [{ name: 'reads', from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET'], paths: ['/orders/*'] }] }],
});
const denyAdminPath = policy('deny-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] });
const allowAll = policy('allow-all', { rules: [{ name: 'any' }] });

/** An ALLOW policy with one rule (named `r`) from the parts given. */
const allowIf = (rule: Record<string, unknown>) => policy('p', { rules: [{ name: 'r', ...rule }] });

const outcome = (v: Verdict): string => (v.kind === 'continue' ? 'allow' : `${v.code}${v.rule ? ` ${v.rule}` : ''}`);

const registryCounter = async (metrics: ReturnType<typeof createSidecarMetrics>, name: string) =>
  (await metrics.registry.getSingleMetric(name)!.get()).values.map((v) => ({ labels: v.labels, value: v.value }));

type Case = [name: string, docs: PolicyDocument[], input: CallInput, expected: string];

function runTable(cases: Case[], allowWhenNoPolicy = false): void {
  it.each(cases)('%s', (_name, docs, input, expected) => {
    const filter = createAuthzFilter(docs, authzRuntime({ allowWhenNoPolicy }));
    expect(outcome(filter.onRequest(call(input)) as Verdict)).toBe(expected);
    // The indexed decision is the one a plain scan of every rule gives.
    const engine = compileAuthorization(docs, { allowWhenNoPolicy, scanUpTo: -1 });
    const req = authzRequestOf(call(input));
    expect(engine.decide(req)).toEqual(engine.explain(req).decision);
  });
}

describe('authz: decision order and defaults', () => {
  runTable([
    ['no policy: deny by default', [], { principal: FRONTEND }, 'authz.denied'],
    ['ALLOW rule matches', [allowFrontendReads], { principal: FRONTEND }, 'allow'],
    ['ALLOW: wrong method', [allowFrontendReads], { principal: FRONTEND, method: 'DELETE' }, 'authz.denied'],
    ['ALLOW: wrong principal', [allowFrontendReads], { principal: ADMIN }, 'authz.denied'],
    ['ALLOW: no principal (plaintext caller)', [allowFrontendReads], {}, 'authz.denied'],
    ['ALLOW: a trailing * is a prefix', [allowFrontendReads], { principal: FRONTEND, path: '/orders/1/items' }, 'allow'],
    ['DENY before ALLOW', [allowFrontendReads, denyAdminPath], { principal: FRONTEND, path: '/admin/x' }, 'authz.denied shop/deny-admin#admin'],
    ['DENY before ALLOW whatever the document order', [denyAdminPath, allowAll], { path: '/admin' }, 'authz.denied shop/deny-admin#admin'],
    [
      'the first matching DENY rule in document order decides',
      [
        policy('d1', {
          action: 'DENY',
          rules: [
            { name: 'a', to: [{ paths: ['/x/*'] }] },
            { name: 'b', to: [{ paths: ['/x/y'] }] },
          ],
        }),
        allowAll,
      ],
      { path: '/x/y' },
      'authz.denied shop/d1#a',
    ],
    [
      'a rule without a name is named by its index',
      [policy('d', { action: 'DENY', rules: [{ to: [{ paths: ['/a'] }] }, { to: [{ paths: ['/b'] }] }] }), allowAll],
      { path: '/b' },
      'authz.denied shop/d#1',
    ],
    ['an ALLOW policy without rules admits nothing', [policy('empty', { action: 'ALLOW', rules: [] })], {}, 'authz.denied'],
    ['an empty rule matches every call', [allowAll], { path: '/anything', method: 'PATCH' }, 'allow'],
    ['AUDIT never decides (deny by default stays)', [policy('audit', { action: 'AUDIT', rules: [{}] })], {}, 'authz.denied'],
    ['AUDIT never decides (an allow stays)', [allowAll, policy('audit', { action: 'AUDIT', rules: [{}] })], {}, 'allow'],
    ['shadow DENY is not enforced', [allowFrontendReads, policy('shadow', { action: 'DENY', mode: 'shadow', rules: [{}] })], { principal: FRONTEND }, 'allow'],
    ['shadow ALLOW does not count as an ALLOW policy', [policy('shadow', { action: 'ALLOW', mode: 'shadow', rules: [{}] })], {}, 'authz.denied'],
  ]);

  it('allow-by-default switch admits calls when no ALLOW policy applies, but DENY still denies', () => {
    const filter = createAuthzFilter([denyAdminPath], authzRuntime({ allowWhenNoPolicy: true }));
    expect(outcome(filter.onRequest(call()) as Verdict)).toBe('allow');
    expect(outcome(filter.onRequest(call({ path: '/admin' })) as Verdict)).toBe('authz.denied shop/deny-admin#admin');
  });

  it('allow-by-default switch does not apply once an ALLOW policy exists', () => {
    const filter = createAuthzFilter([allowFrontendReads], authzRuntime({ allowWhenNoPolicy: true }));
    expect(outcome(filter.onRequest(call({ principal: ADMIN })) as Verdict)).toBe('authz.denied');
  });
});

describe('authz: from', () => {
  const ns = (namespaces: string[]) => allowIf({ from: [{ namespaces }] });
  runTable([
    ['principal exact', [allowIf({ from: [{ principals: [FRONTEND] }] })], { principal: FRONTEND }, 'allow'],
    ['principal in Istio form (no spiffe://)', [allowIf({ from: [{ principals: ['cluster.local/ns/shop/sa/frontend'] }] })], { principal: FRONTEND }, 'allow'],
    ['principal prefix wildcard', [allowIf({ from: [{ principals: ['spiffe://cluster.local/ns/shop/*'] }] })], { principal: FRONTEND }, 'allow'],
    ['principal prefix wildcard, Istio form', [allowIf({ from: [{ principals: ['cluster.local/ns/shop/*'] }] })], { principal: FRONTEND }, 'allow'],
    ['principal suffix wildcard', [allowIf({ from: [{ principals: ['*/sa/frontend'] }] })], { principal: FRONTEND }, 'allow'],
    ['principal suffix wildcard, other account', [allowIf({ from: [{ principals: ['*/sa/frontend'] }] })], { principal: ADMIN }, 'authz.denied'],
    ['principals * means any mTLS peer...', [allowIf({ from: [{ principals: ['*'] }] })], { principal: ADMIN }, 'allow'],
    ['...and not a caller without one', [allowIf({ from: [{ principals: ['*'] }] })], {}, 'authz.denied'],
    ['notPrincipals', [allowIf({ from: [{ notPrincipals: [ADMIN] }] })], { principal: ADMIN }, 'authz.denied'],
    ['notPrincipals: another peer', [allowIf({ from: [{ notPrincipals: [ADMIN] }] })], { principal: FRONTEND }, 'allow'],
    ['notPrincipals: no peer holds', [allowIf({ from: [{ notPrincipals: ['*'] }] })], {}, 'allow'],
    ['namespaces', [ns(['shop'])], { principal: FRONTEND }, 'allow'],
    ['namespaces: mismatch', [ns(['shop'])], { principal: ADMIN }, 'authz.denied'],
    ['namespaces: wildcard', [ns(['sh*'])], { principal: FRONTEND }, 'allow'],
    ['namespaces: no peer', [ns(['*'])], {}, 'authz.denied'],
    ['notNamespaces', [allowIf({ from: [{ notNamespaces: ['ops'] }] })], { principal: ADMIN }, 'authz.denied'],
    ['ipBlocks', [allowIf({ from: [{ ipBlocks: ['10.0.0.0/8'] }] })], { address: '10.1.2.3' }, 'allow'],
    ['ipBlocks: outside', [allowIf({ from: [{ ipBlocks: ['10.0.0.0/8'] }] })], { address: '192.168.1.1' }, 'authz.denied'],
    ['ipBlocks: IPv4-mapped IPv6 address', [allowIf({ from: [{ ipBlocks: ['10.0.0.0/8'] }] })], { address: '::ffff:10.1.2.3' }, 'allow'],
    ['ipBlocks: IPv6', [allowIf({ from: [{ ipBlocks: ['2001:db8::/32'] }] })], { address: '2001:db8::7' }, 'allow'],
    ['ipBlocks: single address', [allowIf({ from: [{ ipBlocks: ['10.0.0.5'] }] })], { address: '10.0.0.5' }, 'allow'],
    ['notIpBlocks', [allowIf({ from: [{ notIpBlocks: ['10.0.0.0/8'] }] })], { address: '10.1.2.3' }, 'authz.denied'],
    ['requestPrincipals', [allowIf({ from: [{ requestPrincipals: ['https://idp.example/alice'] }] })], { jwt: { principal: 'https://idp.example/alice' } }, 'allow'],
    ['requestPrincipals: wildcard issuer', [allowIf({ from: [{ requestPrincipals: ['https://idp.example/*'] }] })], { jwt: { principal: 'https://idp.example/bob' } }, 'allow'],
    ['requestPrincipals: * needs a verified JWT', [allowIf({ from: [{ requestPrincipals: ['*'] }] })], { principal: FRONTEND }, 'authz.denied'],
    ['requestPrincipals: other issuer', [allowIf({ from: [{ requestPrincipals: ['https://idp.example/*'] }] })], { jwt: { principal: 'https://evil.example/bob' } }, 'authz.denied'],
    ['notRequestPrincipals', [allowIf({ from: [{ notRequestPrincipals: ['https://idp.example/mallory'] }] })], { jwt: { principal: 'https://idp.example/mallory' } }, 'authz.denied'],
    ['notRequestPrincipals: no JWT holds', [allowIf({ from: [{ notRequestPrincipals: ['*'] }] })], {}, 'allow'],
    ['every field of one entry must hold', [allowIf({ from: [{ principals: [FRONTEND], ipBlocks: ['192.168.0.0/16'] }] })], { principal: FRONTEND }, 'authz.denied'],
    ['one of several entries is enough', [allowIf({ from: [{ principals: [ADMIN] }, { ipBlocks: ['10.0.0.0/8'] }] })], { principal: FRONTEND }, 'allow'],
    [
      'DENY on a JWT principal denies only that principal',
      [allowAll, policy('d', { action: 'DENY', rules: [{ name: 'm', from: [{ requestPrincipals: ['*/mallory'] }] }] })],
      { jwt: { principal: 'https://idp.example/mallory' } },
      'authz.denied shop/d#m',
    ],
    [
      'DENY on a JWT principal lets others through',
      [allowAll, policy('d', { action: 'DENY', rules: [{ name: 'm', from: [{ requestPrincipals: ['*/mallory'] }] }] })],
      { jwt: { principal: 'https://idp.example/alice' } },
      'allow',
    ],
  ]);
});

describe('authz: to', () => {
  const to = (operation: Record<string, unknown>) => allowIf({ to: [operation] });
  runTable([
    ['methods', [to({ methods: ['GET', 'HEAD'] })], { method: 'HEAD' }, 'allow'],
    ['methods: mismatch', [to({ methods: ['GET'] })], { method: 'POST' }, 'authz.denied'],
    ['methods are upper-cased', [to({ methods: ['get'] })], { method: 'GET' }, 'allow'],
    ['notMethods', [to({ notMethods: ['DELETE'] })], { method: 'DELETE' }, 'authz.denied'],
    ['paths: exact', [to({ paths: ['/orders'] })], { path: '/orders' }, 'allow'],
    ['paths: exact is not a prefix', [to({ paths: ['/orders'] })], { path: '/orders/1' }, 'authz.denied'],
    ['paths: exact does not cover a trailing slash', [to({ paths: ['/orders'] })], { path: '/orders/' }, 'authz.denied'],
    ['paths: prefix', [to({ paths: ['/orders/*'] })], { path: '/orders/1/items' }, 'allow'],
    ['paths: prefix needs its slash', [to({ paths: ['/orders/*'] })], { path: '/orders' }, 'authz.denied'],
    ['paths: prefix within a segment', [to({ paths: ['/adm*'] })], { path: '/administrator' }, 'allow'],
    ['paths: glob stays in one segment', [to({ paths: ['/orders/*/items'] })], { path: '/orders/7/items' }, 'allow'],
    ['paths: glob does not cross segments', [to({ paths: ['/orders/*/items'] })], { path: '/orders/7/x/items' }, 'authz.denied'],
    ['paths: glob with a trailing segment star', [to({ paths: ['/orders/*/items/*'] })], { path: '/orders/7/items/3' }, 'allow'],
    ['paths: glob trailing star stays in its segment', [to({ paths: ['/orders/*/items/*'] })], { path: '/orders/7/items/3/4' }, 'authz.denied'],
    ['paths: * is any path', [to({ paths: ['*'] })], { path: '/x/y' }, 'allow'],
    ['paths are case-sensitive', [to({ paths: ['/admin'] })], { path: '/ADMIN' }, 'authz.denied'],
    ['paths: root', [to({ paths: ['/'] })], { path: '/' }, 'allow'],
    ['paths: ; parameters are not matched', [to({ paths: ['/orders/*'] })], { path: '/orders;jsessionid=1/7' }, 'allow'],
    ['paths: pattern escapes are canonical', [to({ paths: ['/caf%c3%a9'] })], { path: '/caf%C3%A9' }, 'allow'],
    ['paths: pattern with an unreserved escape', [to({ paths: ['/%61dmin'] })], { path: '/admin' }, 'allow'],
    ['notPaths', [to({ notPaths: ['/admin*'] })], { path: '/admin/x' }, 'authz.denied'],
    ['notPaths: other path', [to({ notPaths: ['/admin*'] })], { path: '/orders' }, 'allow'],
    ['paths and notPaths', [to({ paths: ['/api/*'], notPaths: ['/api/internal/*'] })], { path: '/api/internal/x' }, 'authz.denied'],
    ['hosts', [to({ hosts: ['orders.shop'] })], { authority: 'orders.shop' }, 'allow'],
    ['hosts match without the port', [to({ hosts: ['orders.shop'] })], { authority: 'orders.shop:8080' }, 'allow'],
    ['hosts with a port match that port only', [to({ hosts: ['orders.shop:8080'] })], { authority: 'orders.shop:9090' }, 'authz.denied'],
    ['hosts: wildcard', [to({ hosts: ['*.example.com'] })], { authority: 'API.Example.com' }, 'allow'],
    ['hosts: mismatch', [to({ hosts: ['*.example.com'] })], { authority: 'example.org' }, 'authz.denied'],
    ['ports', [to({ ports: [8080] })], { authority: 'orders:8080' }, 'allow'],
    ['ports: 80 without one', [to({ ports: [80] })], { authority: 'orders' }, 'allow'],
    ['ports: mismatch', [to({ ports: [8080] })], { authority: 'orders:9090' }, 'authz.denied'],
    ['grpc service and method', [to({ grpc: { service: 'shop.v1.Orders', method: 'Get' } })], { grpc: true, method: 'POST', path: '/shop.v1.Orders/Get' }, 'allow'],
    ['grpc: other method', [to({ grpc: { service: 'shop.v1.Orders', method: 'Get' } })], { grpc: true, method: 'POST', path: '/shop.v1.Orders/Delete' }, 'authz.denied'],
    ['grpc: service only', [to({ grpc: { service: 'shop.v1.Orders' } })], { grpc: true, method: 'POST', path: '/shop.v1.Orders/Delete' }, 'allow'],
    ['grpc: method only', [to({ grpc: { method: 'Get' } })], { grpc: true, method: 'POST', path: '/shop.v1.Users/Get' }, 'allow'],
    ['grpc: service *', [to({ grpc: { service: '*', method: 'Get' } })], { grpc: true, method: 'POST', path: '/a.B/Get' }, 'allow'],
    ['grpc: a plain HTTP call on the same path is not gRPC', [to({ grpc: { service: 'shop.v1.Orders' } })], { method: 'POST', path: '/shop.v1.Orders/Get' }, 'authz.denied'],
    ['one of several entries is enough', [allowIf({ to: [{ methods: ['POST'] }, { paths: ['/orders/*'] }] })], { path: '/orders/1' }, 'allow'],
    ['from and to must both hold', [allowIf({ from: [{ principals: [FRONTEND] }], to: [{ paths: ['/orders/*'] }] })], { principal: ADMIN, path: '/orders/1' }, 'authz.denied'],
  ]);
});

describe('authz: when', () => {
  const when = (conditions: Record<string, unknown>[]) => allowIf({ when: conditions });
  const claim = (key: string, values: string[], not = false) => when([{ key: `request.auth.claims${key}`, [not ? 'notValues' : 'values']: values }]);
  const jwt = (claims: Record<string, unknown>) => ({ jwt: { principal: 'https://idp.example/alice', claims } });
  runTable([
    ['claim: string', [claim('[role]', ['admin'])], jwt({ role: 'admin' }), 'allow'],
    ['claim: string mismatch', [claim('[role]', ['admin'])], jwt({ role: 'user' }), 'authz.denied'],
    ['claim: wildcard', [claim('[email]', ['*@example.com'])], jwt({ email: 'a@example.com' }), 'allow'],
    ['claim: number', [claim('[level]', ['3'])], jwt({ level: 3 }), 'allow'],
    ['claim: boolean', [claim('[admin]', ['true'])], jwt({ admin: true }), 'allow'],
    ['claim: array, one element matches', [claim('[groups]', ['ops'])], jwt({ groups: ['dev', 'ops'] }), 'allow'],
    ['claim: array, none matches', [claim('[groups]', ['ops'])], jwt({ groups: ['dev'] }), 'authz.denied'],
    ['claim: nested', [claim('[realm][role]', ['admin'])], jwt({ realm: { role: 'admin' } }), 'allow'],
    ['claim: an object never matches', [claim('[realm]', ['*'])], jwt({ realm: { role: 'admin' } }), 'authz.denied'],
    ['claim: absent', [claim('[role]', ['*'])], jwt({}), 'authz.denied'],
    ['claim: no JWT at all', [claim('[role]', ['*'])], {}, 'authz.denied'],
    ['claim: notValues', [claim('[role]', ['banned'], true)], jwt({ role: 'banned' }), 'authz.denied'],
    ['claim: notValues on an array', [claim('[groups]', ['banned'], true)], jwt({ groups: ['dev', 'banned'] }), 'authz.denied'],
    ['claim: notValues holds when absent', [claim('[role]', ['banned'], true)], {}, 'allow'],
    ['header', [when([{ key: 'request.headers[x-tenant]', values: ['acme'] }])], { headers: { 'x-tenant': 'acme' } }, 'allow'],
    ['header: name is case-insensitive', [when([{ key: 'request.headers[X-Tenant]', values: ['acme'] }])], { headers: { 'x-tenant': 'acme' } }, 'allow'],
    ['header: mismatch', [when([{ key: 'request.headers[x-tenant]', values: ['acme'] }])], { headers: { 'x-tenant': 'other' } }, 'authz.denied'],
    ['header: absent', [when([{ key: 'request.headers[x-tenant]', values: ['*'] }])], {}, 'authz.denied'],
    ['header: notValues', [when([{ key: 'request.headers[x-debug]', notValues: ['*'] }])], { headers: { 'x-debug': '1' } }, 'authz.denied'],
    ['source.ip', [when([{ key: 'source.ip', values: ['10.0.0.0/8'] }])], { address: '10.9.9.9' }, 'allow'],
    ['source.ip: notValues', [when([{ key: 'source.ip', notValues: ['10.0.0.0/8'] }])], { address: '10.9.9.9' }, 'authz.denied'],
    ['source.namespace', [when([{ key: 'source.namespace', values: ['shop'] }])], { principal: FRONTEND }, 'allow'],
    ['source.principal (Istio form)', [when([{ key: 'source.principal', values: ['cluster.local/ns/ops/*'] }])], { principal: ADMIN }, 'allow'],
    [
      'every condition must hold',
      [
        when([
          { key: 'source.namespace', values: ['shop'] },
          { key: 'request.headers[x-tenant]', values: ['acme'] },
        ]),
      ],
      { principal: FRONTEND },
      'authz.denied',
    ],
    ['values and notValues together', [when([{ key: 'request.auth.claims[role]', values: ['*'], notValues: ['guest'] }])], jwt({ role: 'guest' }), 'authz.denied'],
    [
      'DENY with a claim condition denies only matching tokens',
      [allowAll, policy('d', { action: 'DENY', rules: [{ name: 'guest', when: [{ key: 'request.auth.claims[role]', values: ['guest'] }] }] })],
      jwt({ role: 'user' }),
      'allow',
    ],
  ]);
});

describe('authz: decision id, annotations, deny body, metrics, log', () => {
  it('records the decision, the deciding rule and a decision id on the call', () => {
    const c = call({ principal: FRONTEND });
    createAuthzFilter([allowFrontendReads], authzRuntime({ allowWhenNoPolicy: false, random: fixedRandom(0.5, 0.25) })).onRequest(c);
    expect(c.annotations).toMatchObject({ decision: 'allow', rule: 'shop/allow-frontend#reads', decisionId: expect.stringMatching(/^[0-9a-z]{12}$/) });
  });

  it('carries the decision id and rule in the deny verdict, and nothing else of the policy', () => {
    const c = call({ path: '/admin' });
    const verdict = createAuthzFilter([allowAll, denyAdminPath], authzRuntime({ allowWhenNoPolicy: false, random: fixedRandom(0.1, 0.9) })).onRequest(c) as Verdict;
    expect(verdict).toEqual({ kind: 'respond', code: 'authz.denied', reason: 'denied by policy', rule: 'shop/deny-admin#admin', decisionId: c.annotations.decisionId });
    expect(c.annotations.decision).toBe('deny');
  });

  it('a default deny has a decision id and no rule', () => {
    const verdict = createAuthzFilter([], authzRuntime({ allowWhenNoPolicy: false })).onRequest(call()) as Verdict;
    expect(verdict).toEqual({ kind: 'respond', code: 'authz.denied', reason: 'no ALLOW policy applies to this workload (deny by default)', decisionId: expect.stringMatching(/^[0-9a-z]{12}$/) });
  });

  it('decision ids come from the injected random source', () => {
    const ids = (seed: number) => {
      const c = call();
      createAuthzFilter([allowAll], authzRuntime({ allowWhenNoPolicy: false, random: fixedRandom(seed, seed / 2) })).onRequest(c);
      return c.annotations.decisionId;
    };
    expect(ids(0.3)).toBe(ids(0.3));
    expect(ids(0.3)).not.toBe(ids(0.4));
  });

  it('counts decisions per policy and rule, and audits apart', async () => {
    const metrics = createSidecarMetrics({ defaultMetrics: false });
    const filter = createAuthzFilter(
      [allowAll, denyAdminPath, policy('audit-admin', { action: 'AUDIT', rules: [{ name: 'a', to: [{ paths: ['/admin*'] }] }] })],
      authzRuntime({ allowWhenNoPolicy: false, metrics }),
    );
    filter.onRequest(call());
    filter.onRequest(call());
    filter.onRequest(call({ path: '/admin' }));
    expect(await registryCounter(metrics, 'meshgate_authz_decisions_total')).toEqual(
      expect.arrayContaining([
        { labels: { decision: 'allow', policy: 'shop/allow-all', rule: 'any' }, value: 2 },
        { labels: { decision: 'deny', policy: 'shop/deny-admin', rule: 'admin' }, value: 1 },
        { labels: { decision: 'audit', policy: 'shop/audit-admin', rule: 'a' }, value: 1 },
      ]),
    );
  });

  it('logs a denial with its decision id, so an operator can find it', () => {
    const lines: Array<[Record<string, unknown>, string]> = [];
    const logger = { info: (fields: object, message: string) => lines.push([fields as Record<string, unknown>, message]) };
    const c = call({ path: '/admin/users', principal: FRONTEND });
    createAuthzFilter([allowAll, denyAdminPath], authzRuntime({ allowWhenNoPolicy: false, logger })).onRequest(c);
    createAuthzFilter([allowAll, denyAdminPath], authzRuntime({ allowWhenNoPolicy: false, logger })).onRequest(call());
    expect(lines).toEqual([
      [
        expect.objectContaining({ decision_id: c.annotations.decisionId, decision: 'deny', rule: 'shop/deny-admin#admin', path: '/admin/users', source_principal: FRONTEND, request_id: 'r1' }),
        'authorization denied',
      ],
    ]);
  });

  it('a throwing metrics sink or logger never fails the call', () => {
    const broken = {
      inc: () => {
        throw new Error('sink down');
      },
    };
    const filter = createAuthzFilter(
      [denyAdminPath],
      authzRuntime({
        allowWhenNoPolicy: false,
        metrics: { authzDecisions: broken, shadowDenials: broken },
        logger: {
          info: () => {
            throw new Error('log down');
          },
        },
      }),
    );
    expect(outcome(filter.onRequest(call()) as Verdict)).toBe('authz.denied');
  });
});

describe('authz: shadow mode', () => {
  const shadowDeny = policy('new-deny', {
    action: 'DENY',
    mode: 'shadow',
    rules: [
      { name: 'no-deletes', to: [{ methods: ['DELETE'] }] },
      { name: 'no-admin', to: [{ paths: ['/admin*'] }] },
    ],
  });

  it('a shadow DENY rule never denies, and is recorded, counted and logged as would-deny', async () => {
    const metrics = createSidecarMetrics({ defaultMetrics: false });
    const lines: Array<[object, string]> = [];
    const filter = createAuthzFilter([allowAll, shadowDeny], authzRuntime({ allowWhenNoPolicy: false, metrics, logger: { info: (f, m) => lines.push([f, m]) } }));
    const c = call({ method: 'DELETE', path: '/admin/x' });
    expect(outcome(filter.onRequest(c) as Verdict)).toBe('allow');
    expect(c.annotations.shadowDenials).toEqual(['shop/new-deny#no-deletes', 'shop/new-deny#no-admin']);
    expect(c.annotations.rule).toBe('shop/allow-all#any');
    filter.onRequest(call({ method: 'DELETE' }));
    filter.onRequest(call());
    expect(await registryCounter(metrics, 'meshgate_shadow_denials_total')).toEqual(
      expect.arrayContaining([
        { labels: { policy: 'shop/new-deny', rule: 'no-deletes' }, value: 2 },
        { labels: { policy: 'shop/new-deny', rule: 'no-admin' }, value: 1 },
      ]),
    );
    expect(lines.map(([fields, message]) => [(fields as { shadow_denials?: string[] }).shadow_denials, message])).toEqual([
      [['shop/new-deny#no-deletes', 'shop/new-deny#no-admin'], 'authorization: shadow rules would deny'],
      [['shop/new-deny#no-deletes'], 'authorization: shadow rules would deny'],
    ]);
  });

  it('keeps shadow denials another filter recorded', () => {
    const c = call({ method: 'DELETE' });
    c.annotations.shadowDenials = ['shop/jwt#require-token'];
    createAuthzFilter([allowAll, shadowDeny], authzRuntime({ allowWhenNoPolicy: false })).onRequest(c);
    expect(c.annotations.shadowDenials).toEqual(['shop/jwt#require-token', 'shop/new-deny#no-deletes']);
  });

  it('does not report shadow denials for calls that are denied anyway', () => {
    const c = call({ method: 'DELETE', principal: ADMIN });
    expect(outcome(createAuthzFilter([allowFrontendReads, shadowDeny], authzRuntime({ allowWhenNoPolicy: false })).onRequest(c) as Verdict)).toBe('authz.denied');
    expect(c.annotations.shadowDenials).toBeUndefined();
  });

  it('a shadow ALLOW policy reports the calls it would stop admitting when the workload is allow-by-default', () => {
    const shadowAllow = policy('first-allow', { action: 'ALLOW', mode: 'shadow', rules: [{ name: 'frontend', from: [{ principals: [FRONTEND] }] }] });
    const filter = createAuthzFilter([shadowAllow], authzRuntime({ allowWhenNoPolicy: true }));
    const stranger = call({ principal: ADMIN });
    const friend = call({ principal: FRONTEND });
    expect(outcome(filter.onRequest(stranger) as Verdict)).toBe('allow');
    expect(outcome(filter.onRequest(friend) as Verdict)).toBe('allow');
    expect(stranger.annotations.shadowDenials).toEqual(['shop/first-allow']);
    expect(friend.annotations.shadowDenials).toBeUndefined();
  });
});
