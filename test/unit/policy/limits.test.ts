import { isSafe } from 'redos-detector';
import { describe, expect, it, vi } from 'vitest';
import { createRegexSafetyChecker, REGEX_TOO_COMPLEX_REASON, REGEX_UNSAFE_REASON } from '../../../src/config/regex-safety.ts';
import { DEFAULT_POLICY_LIMITS, resolvePolicyLimits } from '../../../src/policy/limits.ts';
import { parsePolicyText } from '../../../src/policy/parse-documents.ts';
import { createPolicyValidator } from '../../../src/policy/validate.ts';
import { doc, errorLines } from './helpers.ts';

const KEY = 'p.yaml: document 0 (AuthorizationPolicy/shop/p1)';

/** CPU time of this process since `since`, in ms. */
const cpuMs = (since: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
};

describe('policy limits', () => {
  it('has the documented defaults', () => {
    expect(DEFAULT_POLICY_LIMITS).toMatchObject({ maxRules: 1000, maxListValues: 256, maxPatternLength: 512, maxDocumentBytes: 262_144 });
  });

  it('refuses overrides that are not positive integers, or unknown', () => {
    expect(() => resolvePolicyLimits({ maxRules: 0 })).toThrow('policy limit maxRules must be a positive integer, got 0');
    expect(() => resolvePolicyLimits({ maxRulez: 1 } as never)).toThrow('unknown policy limit "maxRulez"');
    expect(resolvePolicyLimits({ maxRules: 5 }).maxRules).toBe(5);
  });

  it('caps the rules of a document', () => {
    const rules = Array.from({ length: 1001 }, () => '{}').join(', ');
    expect(errorLines(doc('AuthorizationPolicy', `rules: [${rules}]`))).toEqual([`${KEY}: spec.rules: too many entries: at most 1000 (got 1001)`]);
    const validator = createPolicyValidator({ limits: { maxRules: 2 } });
    expect(errorLines(doc('AuthorizationPolicy', 'rules: [{}, {}, {}]'), { validator })).toEqual([`${KEY}: spec.rules: too many entries: at most 2 (got 3)`]);
  });

  it('caps the values of a list', () => {
    const principals = Array.from({ length: 257 }, (_, i) => `p${i}`).join(', ');
    expect(errorLines(doc('AuthorizationPolicy', `rules: [{ from: [{ principals: [${principals}] }] }]`))).toEqual([
      `${KEY}: spec.rules[0].from[0].principals: too many entries: at most 256 (got 257)`,
    ]);
  });

  it('caps the length of a pattern', () => {
    const long = `/${'a'.repeat(512)}`;
    expect(errorLines(doc('AuthorizationPolicy', `rules: [{ to: [{ paths: ["${long}"] }] }]`))).toEqual([`${KEY}: spec.rules[0].to[0].paths[0]: too long: at most 512 characters (got 513)`]);
  });

  it('caps any string, before the schema runs', () => {
    expect(errorLines(doc('AuthorizationPolicy', `rules: [{ name: ${'a'.repeat(9000)} }]`))).toEqual([`${KEY}: spec.rules[0].name: too long: at most 8192 characters (got 9000)`]);
  });

  it('caps the size of a document, and only that document fails', () => {
    const big = doc('ValidationPolicy', `rules: [{ name: a, jsonSchema: { description: "${'x'.repeat(8000)}", enum: [${Array.from({ length: 40 }, () => `"${'y'.repeat(8000)}"`).join(', ')}] } }]`);
    const small = doc('IPAccessPolicy', 'deny: [10.0.0.0/8]', '{ name: p2, namespace: shop }');
    const lines = errorLines(`${big}---\n${small}`);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^p\.yaml: document 0: \(top level\): document too large: at most 262144 bytes \(got \d+\)$/);
  });

  it('caps nesting depth (and so self-referencing anchors)', () => {
    const deep = `${'{ a: '.repeat(40)}1${' }'.repeat(40)}`;
    const lines = errorLines(doc('ValidationPolicy', `rules: [{ name: a, jsonSchema: ${deep} }]`));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^p\.yaml: document 0 \(ValidationPolicy\/shop\/p1\): spec\.rules\[0\]\.jsonSchema(\.a)+: nested too deeply \(more than 32 levels\)$/);
  });

  it('refuses an alias bomb', () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
      ...Array.from(
        { length: 8 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(',')}]`,
      ),
    ].join('\n');
    const lines = errorLines(`${bomb}\n`);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^p\.yaml: document 0: \(yaml\): .*at most 100 alias expansions/);
  });

  it('caps the regexes of a document', () => {
    const validator = createPolicyValidator({ limits: { maxRegexes: 2 } });
    const routes = ['a', 'b', 'c'].map((r) => `{ match: { path: { regex: "/${r}" } } }`).join(', ');
    expect(errorLines(doc('Route', `service: orders\nroutes: [${routes}]`), { validator })).toEqual([
      'p.yaml: document 0 (Route/shop/p1): spec.routes[2].match.path.regex: too many regular expressions in one document: at most 2',
    ]);
  });

  it('refuses a mapping with too many keys, naming the mapping and the limit', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `    k${i}: v`).join('\n');
    expect(errorLines(doc('AuthorizationPolicy', `rules: []\nx:\n${keys}`))).toEqual(['p.yaml: document 0: spec.x: line 7, column 7: too many keys: at most 1000 in one mapping (got 5000)']);
  });

  // Before the bounds, yaml's pairwise duplicate-key check made 40k keys cost 15 s and 160k keys
  // minutes, on the policy server's event loop. Generous bounds on CPU time (not wall time, which
  // a busy machine stretches): they fail only on that.
  it('refuses a huge mapping quickly', () => {
    const keys = Array.from({ length: 40_000 }, (_, i) => `    k${i}: v`).join('\n');
    const started = process.cpuUsage();
    const lines = errorLines(doc('AuthorizationPolicy', `rules: []\nx:\n${keys}`));
    expect(cpuMs(started)).toBeLessThan(6000);
    expect(lines).toEqual([expect.stringMatching(/^p\.yaml: document 0: \(top level\): document too large: at most 262144 bytes/)]);
  });

  it('refuses a file with too many nodes before parsing it, stopping at the limit', () => {
    const keys = Array.from({ length: 160_000 }, (_, i) => `  k${i}: v`).join('\n');
    const started = process.cpuUsage();
    const lines = errorLines(`x:\n${keys}\n`);
    expect(cpuMs(started)).toBeLessThan(3000);
    expect(lines).toEqual(['p.yaml: document 0: (top level): too many YAML nodes: at most 200000 values, keys and collections in one file; no document of it applies']);
  });

  it('refuses a file with too many documents before parsing it', () => {
    const small = doc('IPAccessPolicy', 'deny: [10.0.0.0/8]');
    expect(errorLines(Array(1001).fill(small).join('---\n'))).toEqual(['p.yaml: document 0: (top level): too many documents: at most 1000 in one file; no document of it applies']);
    const validator = createPolicyValidator({ limits: { maxDocumentsPerFile: 2 } });
    expect(parsePolicyText(`${small}---\n# only a comment\n`, 'p.yaml', { validator }).errors).toEqual([]);
  });

  it('refuses duplicate keys, numbers out of range and keys that are not plain values, each with its field', () => {
    const lines = errorLines(doc('AuthorizationPolicy', 'rules: [{ to: [{ paths: [/a] }] }]\nrules: []\nx: { n: 1e400, [a]: b }'));
    expect(lines).toEqual([
      'p.yaml: document 0: spec.rules: line 6, column 3: Map keys must be unique ("rules" is also on line 5)',
      'p.yaml: document 0: spec.x.n: line 7, column 11: not a finite number: 1e400',
      'p.yaml: document 0: spec.x: line 7, column 18: a mapping key must be a plain value, not a list, mapping or alias',
    ]);
  });

  it('caps the error lines of one document', () => {
    const validator = createPolicyValidator({ limits: { maxErrorsPerDocument: 2 } });
    const lines = errorLines(doc('AuthorizationPolicy', 'a: 1\nb: 2\nc: 3\nd: 4'), { validator });
    expect(lines).toEqual([`${KEY}: spec.a: unknown field`, `${KEY}: spec.b: unknown field (and 2 more errors in this document)`]);
  });
});

describe('regex safety', () => {
  // The analyser, counted: a verdict from the checker's cache must not run it again.
  const analyser = vi.fn(isSafe);
  const checker = createRegexSafetyChecker({ isSafe: analyser });

  it.each(['^(?:(a+)+$)$', '^(?:(a|a)*$)$', '^(?:(x+x+)+y)$', '^(?:(\\w+\\s?)*)$', '^(?:.*.*=.*)$', '(.*a){12}'])('refuses %s', (source) => {
    expect([REGEX_UNSAFE_REASON, REGEX_TOO_COMPLEX_REASON]).toContain(checker.check(source));
  });

  it.each(['^(?:/api/v[0-9]+/.*)$', '^(?:/orders/[0-9]+)$', '^(?:[a-z0-9-]+\\.example\\.com)$', '^(?:application/(json|xml)(;.*)?)$', '^(?:Bearer [A-Za-z0-9._-]+)$'])('accepts %s', (source) => {
    expect(checker.check(source)).toBeUndefined();
  });

  it('names an invalid pattern', () => {
    expect(checker.check('(')).toBe('not a valid regular expression (/(/: Unterminated group)');
  });

  it('gives the same verdict again from its cache', () => {
    const first = checker.check('^(?:(a+)+$)$');
    const analysed = analyser.mock.calls.length;
    expect(checker.check('^(?:(a+)+$)$')).toBe(first);
    expect(analyser.mock.calls.length).toBe(analysed);
    checker.check('^(?:(b+)+$)$');
    expect(analyser.mock.calls.length).toBe(analysed + 1);
  });
});
