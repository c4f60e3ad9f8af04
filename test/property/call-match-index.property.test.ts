import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileValidationRules } from '../../src/filters/validate/validate-rules.ts';
import type { CallMatchSpec } from '../../src/policy/call-match.ts';
import { compileCallMatch, matchPathOf } from '../../src/policy/call-match.ts';
import type { CallMatchEntry } from '../../src/policy/call-match-index.ts';
import { createCallMatchIndex } from '../../src/policy/call-match-index.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';

/*
 * The index rate limiting and validation look their rules up in
 * (src/policy/call-match-index.ts) returns exactly what a scan of every rule
 * in order returns: the same rules, in the same order. Rules and calls come
 * from small vocabularies so that they often meet.
 */

const method = fc.constantFrom('GET', 'POST', 'DELETE', 'get');
const pathPattern = fc.constantFrom(
  '/',
  '/admin',
  '/admin*',
  '/admin/*',
  '/orders/*',
  '/orders/*/items',
  '/orders/1',
  '*',
  '/pub*',
  '/a/b',
  '/a/b/',
  '/caf%c3%a9',
  '/a;v=1',
  '/shop.v1.Orders/Get',
  '/o*s/*',
);
const callPath = fc.constantFrom(
  '/',
  '/admin',
  '/admin/x',
  '/adminx',
  '/orders',
  '/orders/',
  '/orders/1',
  '/orders/1/items',
  '/orders/1/items/2',
  '/pub',
  '/public/x',
  '/a/b',
  '/a/b/',
  '/a',
  '/caf%C3%A9',
  '/a;v=1',
  '/shop.v1.Orders/Get',
  '/os/x',
  '*',
);
const spec: fc.Arbitrary<CallMatchSpec | undefined> = fc.option(
  fc.record({
    methods: fc.option(fc.array(method, { maxLength: 3 }), { nil: undefined }),
    paths: fc.option(fc.array(pathPattern, { maxLength: 3 }), { nil: undefined }),
  }),
  { nil: undefined },
);
const call = fc.record({ method, path: callPath });

function entriesOf(specs: readonly (CallMatchSpec | undefined)[]): CallMatchEntry<number>[] {
  return specs.map((s, i) => ({ rule: i, match: compileCallMatch(s), spec: s }));
}

function scan(entries: readonly CallMatchEntry<number>[], m: string, matchPath: string): number[] {
  return entries.filter((e) => e.match(m, matchPath)).map((e) => e.rule);
}

describe('call-match index', () => {
  it('returns the rules a scan in order returns, for random rule sets and calls', () => {
    fc.assert(
      fc.property(fc.array(spec, { maxLength: 30 }), fc.array(call, { minLength: 1, maxLength: 10 }), (specs, calls) => {
        const entries = entriesOf(specs);
        const indexed = createCallMatchIndex(entries, 0); // always the index, however few the rules
        const chosen = createCallMatchIndex(entries); // the scan up to MATCH_SCAN_UP_TO rules, as the filters use it
        for (const c of calls) {
          const matchPath = matchPathOf(c.path);
          const expected = scan(entries, c.method, matchPath);
          expect([...indexed.matching(c.method, matchPath)]).toEqual(expected);
          expect([...chosen.matching(c.method, matchPath)]).toEqual(expected);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('the validation rules a call matches come out of the index in rule order', () => {
    const validator = createPolicyValidator();
    const documentOf = (name: string, rules: readonly (CallMatchSpec | undefined)[]): PolicyDocument => {
      const input = {
        apiVersion: 'meshgate.dev/v1',
        kind: 'ValidationPolicy',
        metadata: { name, namespace: 'shop' },
        spec: { rules: rules.map((match, i) => ({ name: `r${i}`, ...(match ? { match: JSON.parse(JSON.stringify(match)) } : {}), requiredHeaders: ['x-a'] })) },
      };
      const result = validator.validate(input, { file: 'test', index: 0 });
      if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
      return result.document.document;
    };
    const upperSpec = spec.map((s) => (s?.methods ? { ...s, methods: s.methods.map((m) => m.toUpperCase()) } : s));
    fc.assert(
      fc.property(fc.array(fc.array(upperSpec, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 4 }), fc.array(call, { minLength: 1, maxLength: 10 }), (docs, calls) => {
        const { rules, index } = compileValidationRules(docs.map((d, i) => documentOf(`v${i}`, d)));
        for (const c of calls) {
          const matchPath = matchPathOf(c.path);
          expect(index.matching(c.method, matchPath).map((r) => r.id)).toEqual(rules.filter((r) => r.match(c.method, matchPath)).map((r) => r.id));
        }
      }),
      { numRuns: 200 },
    );
  });
});
