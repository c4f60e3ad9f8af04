import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../src/core/verdict.ts';
import { compileAuthorization } from '../../src/filters/authz/authz-engine.ts';
import { createAuthzFilter } from '../../src/filters/authz/authz-filter.ts';
import { authzRequestOf } from '../../src/filters/authz/authz-request.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { readRequestTarget } from '../../src/proxy/call.ts';
import type { DownstreamRequest } from '../../src/proxy/listener.ts';
import { authzRuntime } from '../helpers/filter-runtimes.ts';
import type { CallInput } from '../unit/filters/authz-fixtures.ts';
import { ADMIN, call, FRONTEND, policy } from '../unit/filters/authz-fixtures.ts';

/*
 * Properties of authorization (src/filters/authz/), over random policies and
 * calls drawn from small vocabularies so that rules and calls often meet.
 */

// ---- random rules and calls ------------------------------------------------

const list = <T>(arb: fc.Arbitrary<T>) => fc.uniqueArray(arb, { minLength: 1, maxLength: 3 });
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
/** Drops the keys whose value is undefined (the schema is strict about unknown keys, not absent ones). */
const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

const principal = fc.constantFrom(FRONTEND, ADMIN, 'spiffe://cluster.local/ns/shop/*', '*/sa/admin', 'cluster.local/ns/shop/sa/frontend', '*');
const namespace = fc.constantFrom('shop', 'ops', 'sh*', '*');
const cidr = fc.constantFrom('10.0.0.0/8', '192.168.0.0/16', '2001:db8::/32', '10.1.1.1');
const requestPrincipal = fc.constantFrom('https://idp/alice', 'https://idp/*', '*');
const method = fc.constantFrom('GET', 'POST', 'DELETE');
const pathPattern = fc.constantFrom('/', '/admin', '/admin*', '/admin/*', '/orders/*', '/orders/*/items', '*', '/pub*', '/a/b', '/shop.v1.Orders/Get');
const host = fc.constantFrom('orders', 'orders:8080', '*.example.com');

const source = fc
  .record({
    principals: opt(list(principal)),
    notPrincipals: opt(list(principal)),
    namespaces: opt(list(namespace)),
    ipBlocks: opt(list(cidr)),
    notIpBlocks: opt(list(cidr)),
    requestPrincipals: opt(list(requestPrincipal)),
    notRequestPrincipals: opt(list(requestPrincipal)),
  })
  .map(defined)
  .filter((s) => Object.keys(s).length > 0);

const operation = fc
  .record({
    methods: opt(list(method)),
    notMethods: opt(list(method)),
    paths: opt(list(pathPattern)),
    notPaths: opt(list(pathPattern)),
    hosts: opt(list(host)),
    ports: opt(list(fc.constantFrom(80, 8080))),
    grpc: opt(fc.constantFrom({ service: 'shop.v1.Orders' }, { service: 'shop.v1.Orders', method: 'Get' }, { method: 'Get' })),
  })
  .map(defined)
  .filter((o) => Object.keys(o).length > 0);

const condition = fc.oneof(
  fc.record({ key: fc.constant('request.auth.claims[role]'), values: list(fc.constantFrom('admin', 'user', '*')) }),
  fc.record({ key: fc.constant('request.auth.claims[role]'), notValues: list(fc.constantFrom('admin', 'guest')) }),
  fc.record({ key: fc.constant('request.headers[x-tenant]'), values: list(fc.constantFrom('acme', '*')) }),
  fc.record({ key: fc.constant('source.ip'), values: list(cidr) }),
  fc.record({ key: fc.constant('source.namespace'), notValues: list(namespace) }),
);

const rule = fc
  .record({ from: opt(fc.array(source, { minLength: 1, maxLength: 2 })), to: opt(fc.array(operation, { minLength: 1, maxLength: 2 })), when: opt(fc.array(condition, { minLength: 1, maxLength: 2 })) })
  .map(defined);

interface PolicySpec {
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  mode: 'enforce' | 'shadow';
  rules: Record<string, unknown>[];
}
const policySpec: fc.Arbitrary<PolicySpec> = fc.record({
  action: fc.constantFrom('ALLOW', 'DENY', 'AUDIT'),
  mode: fc.constantFrom('enforce', 'enforce', 'shadow'),
  rules: fc.array(rule, { maxLength: 4 }),
});
const policySet = fc.array(policySpec, { maxLength: 5 });
const toDocuments = (specs: PolicySpec[]): PolicyDocument[] => specs.map((spec, i) => policy(`p${i}`, { ...spec }));

const callInput: fc.Arbitrary<CallInput> = fc
  .record({
    principal: fc.constantFrom(FRONTEND, ADMIN, 'spiffe://cluster.local/ns/shop/sa/other', undefined),
    method,
    path: fc.constantFrom('/', '/admin', '/admin/x', '/administrator', '/orders/1', '/orders/1/items', '/pub', '/a/b', '/a/b;x=1', '/shop.v1.Orders/Get', '/shop.v1.Orders/Put'),
    grpc: fc.boolean(),
    authority: fc.constantFrom('orders', 'orders:8080', 'api.example.com'),
    address: fc.constantFrom('10.1.1.1', '192.168.3.3', '2001:db8::1', '::ffff:10.2.2.2'),
    headers: fc.constantFrom<Record<string, string>>({}, { 'x-tenant': 'acme' }),
    jwt: opt(fc.record({ principal: fc.constantFrom('https://idp/alice', 'https://idp/bob', 'https://other/alice'), claims: fc.constantFrom({}, { role: 'admin' }, { role: ['user', 'guest'] }) })),
  })
  .map(defined);

const decide = (docs: PolicyDocument[], input: CallInput, allowWhenNoPolicy: boolean, scanUpTo = -1) => compileAuthorization(docs, { allowWhenNoPolicy, scanUpTo }).decide(authzRequestOf(call(input)));

// ---- properties -------------------------------------------------------------

describe('authorization (property)', () => {
  it('the indexed decision equals a plain scan of every rule', () => {
    const outcomes = new Set<string>();
    fc.assert(
      fc.property(policySet, fc.array(callInput, { minLength: 1, maxLength: 8 }), fc.boolean(), (specs, inputs, allowWhenNoPolicy) => {
        // scanUpTo -1: the index even for a handful of rules (by default a few rules are scanned).
        const engine = compileAuthorization(toDocuments(specs), { allowWhenNoPolicy, scanUpTo: -1 });
        for (const input of inputs) {
          const req = authzRequestOf(call(input));
          const decision = engine.decide(req);
          expect(decision).toEqual(engine.explain(req).decision);
          outcomes.add(
            `${decision.allow ? 'allow' : 'deny'} ${decision.rule ? 'by a rule' : 'by default'}${decision.shadowDenials.length > 0 ? ' +shadow' : ''}${decision.audits.length > 0 ? ' +audit' : ''}`,
          );
        }
      }),
      { numRuns: 400 },
    );
    // The vocabularies are small enough that rules and calls meet: every kind of outcome occurs.
    expect([...outcomes].filter((o) => !o.includes('+'))).toEqual(expect.arrayContaining(['allow by a rule', 'deny by a rule', 'deny by default', 'allow by default']));
    expect([...outcomes].some((o) => o.includes('+shadow'))).toBe(true);
    expect([...outcomes].some((o) => o.includes('+audit'))).toBe(true);
  });

  it('adding a DENY rule never turns a deny into an allow', () => {
    fc.assert(
      fc.property(policySet, rule, fc.constantFrom('new policy', 'into an existing DENY policy'), callInput, fc.boolean(), (specs, extra, where, input, allowWhenNoPolicy) => {
        const before = decide(toDocuments(specs), input, allowWhenNoPolicy);
        fc.pre(!before.allow);
        const existing = specs.findIndex((s) => s.action === 'DENY');
        const after =
          where === 'into an existing DENY policy' && existing >= 0
            ? specs.map((s, i) => (i === existing ? { ...s, rules: [...s.rules, extra] } : s))
            : [...specs, { action: 'DENY' as const, mode: 'enforce' as const, rules: [extra] }];
        expect(decide(toDocuments(after), input, allowWhenNoPolicy).allow).toBe(false);
      }),
      { numRuns: 400 },
    );
  });

  it('adding a DENY rule that matches a call denies it, whatever else the policies say', () => {
    fc.assert(
      fc.property(policySet, callInput, fc.boolean(), (specs, input, allowWhenNoPolicy) => {
        const docs = [...toDocuments(specs), policy('deny-this', { action: 'DENY', rules: [{ name: 'it', to: [{ paths: [input.path!] }] }] })];
        expect(decide(docs, input, allowWhenNoPolicy).allow).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});

// ---- every encoding of a denied path is denied -------------------------------

const DENIED = ['/admin', '/admin/users/7', '/internal/secret', '/internal/secret/'];

/** One spelling of `path`: characters percent-encoded in either case, dot segments, repeated slashes and `;` parameters inserted. */
function spelling(path: string): fc.Arbitrary<string> {
  const segments = path.slice(1).split('/');
  const encodeChar = (c: string) => fc.constantFrom(c, c, `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`, `%${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`);
  const segment = (name: string) =>
    fc.tuple(fc.tuple(...[...name].map(encodeChar)), fc.constantFrom('', '', ';', ';jsessionid=1', ';a=b;c')).map(([chars, param]) => chars.join('') + (name === '' ? '' : param));
  const noise = fc.constantFrom('', '', '', './', '%2e/', 'x/../', 'x/%2e%2e/', 'x/.%2E/', '/', '//', 'x;y/../');
  const separator = fc.constantFrom('/', '/', '/', '%2F', '%2f', '%5C', '\\');
  return fc.tuple(...segments.map((name) => fc.tuple(separator, noise, segment(name)))).map((parts) => parts.map(([sep, pre, seg]) => `${sep}${pre}${seg}`).join(''));
}

function downstream(url: string): DownstreamRequest {
  return { method: 'GET', url, headers: { host: 'orders' }, rawHeaders: ['Host', 'orders'], httpVersion: '1.1' } as unknown as DownstreamRequest;
}

describe('authorization of encoded paths (property)', () => {
  const docs = [
    policy('allow-all', { rules: [{ name: 'any' }] }),
    policy('deny', {
      action: 'DENY',
      rules: [
        { name: 'admin', to: [{ paths: ['/admin*'] }] },
        { name: 'secret', to: [{ paths: ['/internal/secret', '/internal/secret/*'] }] },
      ],
    }),
  ];
  const filter = createAuthzFilter(docs, authzRuntime({ allowWhenNoPolicy: false }));

  it('every spelling of a denied path is refused at the door or denied by the rule', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...DENIED).chain((p) => fc.tuple(fc.constant(p), spelling(p))),
        ([denied, raw]) => {
          const target = readRequestTarget(downstream(raw));
          if ('code' in target) {
            // Refused with 400 before any filter runs (a leading `\` is not even a path).
            expect(['request.invalid_path', 'request.malformed']).toContain(target.code);
            return;
          }
          const verdict = filter.onRequest(call({ path: target.path })) as Verdict;
          expect(verdict, `${raw} -> ${target.path} (a spelling of ${denied})`).toMatchObject({ kind: 'respond', code: 'authz.denied', rule: expect.stringMatching(/^shop\/deny#/) });
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('the spellings do reach the rule (not everything is refused)', () => {
    const samples = fc.sample(fc.constantFrom(...DENIED).chain(spelling), { numRuns: 500, seed: 42 });
    const reached = samples.filter((raw) => !('code' in readRequestTarget(downstream(raw))));
    expect(reached.length).toBeGreaterThan(100);
  });
});
