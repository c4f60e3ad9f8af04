import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createValidateFilter } from '../../../../src/filters/validate/validate-filter.ts';
import { createJsonSchemaCompiler } from '../../../../src/policy/json-schema.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { validateRuntime } from '../../../helpers/filter-runtimes.ts';
import type { CallInput } from './validate-fixtures.ts';
import { recordingMetrics, testCall, validation } from './validate-fixtures.ts';

/* Safe JSON through the validate filter: each refusal with its code, before the schema ever runs. */

const json = { 'content-type': 'application/json' };

/** A filter whose JSON Schema checks are counted: the schema compiler is ajv's, wrapped. */
async function run(documents: PolicyDocument[], input: CallInput) {
  const rec = recordingMetrics();
  let schemaRuns = 0;
  const compile = createJsonSchemaCompiler();
  const schemaCompiler = (schema: Readonly<Record<string, unknown>>) => {
    const check = compile(schema);
    return (value: unknown) => {
      schemaRuns++;
      return check(value);
    };
  };
  const filter = createValidateFilter(documents, validateRuntime({ metrics: rec.metrics, random: () => 0.5, schemaCompiler }));
  const t = testCall(input);
  const verdict: Verdict = await filter.onRequest(t.call);
  return { verdict, t, schemaRuns: () => schemaRuns, ...rec };
}

const schemaRule = validation('orders', {
  rules: [{ name: 'create', match: { paths: ['/orders'] }, jsonSchema: { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } } }],
});

describe('safe JSON in the validate filter', () => {
  it.each<[string, string, string, string]>([
    ['a duplicate key', '{"items":[],"role":"user","role":"admin"}', 'validate.json_duplicate_key', 'request body repeats a key in one object (at byte 26)'],
    ['nesting past the default 64 levels', `{"items":[]${',"x":'.repeat(1)}${'['.repeat(70)}${']'.repeat(70)}}`, 'validate.json_too_deep', 'request body nests JSON deeper than 64 levels'],
    [
      'an object past the default 1000 members',
      `{${Array.from({ length: 1001 }, (_, i) => `"k${i}":${i}`).join(',')}}`,
      'validate.json_too_many_members',
      'request body has an object with more than 1000 members',
    ],
    [
      'an integer past 2^53',
      '{"items":[],"id":9007199254740993}',
      'validate.json_unsafe_number',
      'request body has a number that JSON parsers cannot hold exactly (beyond 2^53 or out of range, at byte 17)',
    ],
    ['an escaped lone surrogate', '{"items":["\\udfff"]}', 'validate.json_invalid_utf8', 'request body escapes a lone surrogate (\\udfff) at byte 11'],
  ])('%s: refused 400 with its own code, and the schema never runs', async (_name, body, code, reason) => {
    const { verdict, schemaRuns, decisions } = await run([schemaRule], { headers: json, body });
    expect(verdict).toMatchObject({ kind: 'respond', code, reason, rule: 'shop/orders#create' });
    expect(schemaRuns()).toBe(0);
    expect(decisions).toEqual(['shop/orders#create failed']);
  });

  it('a JSON bomb (500 000 items, under the body limit) is refused before the schema: uniqueItems would be quadratic in them', async () => {
    const bomb = `{"items":[${'0,'.repeat(499_999)}0]}`;
    const { verdict, schemaRuns } = await run([schemaRule], { headers: json, body: bomb });
    expect(verdict).toMatchObject({ code: 'validate.json_too_many_members', reason: 'request body has an array with more than 10000 items' });
    expect(schemaRuns()).toBe(0);
  });

  it('a body within the limits reaches the schema once', async () => {
    const { verdict, schemaRuns } = await run([schemaRule], { headers: json, body: '{"items":[1,2,3]}' });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(schemaRuns()).toBe(1);
  });

  it('limits are per rule: `json` alone makes a rule read and check a JSON body, with no schema', async () => {
    const docs = [
      validation('limits', {
        rules: [
          { name: 'loose', match: { paths: ['/bulk'] }, json: { maxArrayItems: 100_000, maxDepth: 3, unsafeNumbers: 'allow' } },
          { name: 'strict', match: { paths: ['/orders'] }, json: { maxArrayItems: 5 } },
        ],
      }),
    ];
    const many = `[${'1,'.repeat(20_000)}12345678901234567890]`;
    expect((await run(docs, { path: '/bulk', headers: json, body: many })).verdict).toEqual({ kind: 'continue' });
    expect((await run(docs, { path: '/bulk', headers: json, body: '[[[[1]]]]' })).verdict).toMatchObject({ code: 'validate.json_too_deep', rule: 'shop/limits#loose' });
    expect((await run(docs, { path: '/orders', headers: json, body: '[1,2,3,4,5,6]' })).verdict).toMatchObject({ code: 'validate.json_too_many_members', rule: 'shop/limits#strict' });
    expect((await run(docs, { path: '/orders', headers: json, body: '[9007199254740993]' })).verdict).toMatchObject({ code: 'validate.json_unsafe_number' });
    // `json` alone: a call without a body has nothing to check.
    expect((await run(docs, { path: '/orders', method: 'GET' })).verdict).toEqual({ kind: 'continue' });
    expect((await run(docs, { path: '/orders', headers: json, body: '{"a":' })).verdict).toMatchObject({ code: 'validate.malformed_json' });
  });

  it('two rules reading one body share one pass, each applying its own limits', async () => {
    const docs = [
      validation('two', {
        rules: [
          { name: 'wide', match: { paths: ['/orders'] }, json: { maxArrayItems: 1000 } },
          { name: 'narrow', match: { paths: ['/orders'] }, json: { maxArrayItems: 10 } },
        ],
      }),
    ];
    const { verdict, decisions } = await run(docs, { headers: json, body: `[${'1,'.repeat(19)}1]` });
    expect(verdict).toMatchObject({ code: 'validate.json_too_many_members', rule: 'shop/two#narrow' });
    expect(decisions).toEqual(['shop/two#wide passed', 'shop/two#narrow failed']);
  });

  it('a shadow document counts a safe-JSON failure and lets the call through with every byte', async () => {
    const doc = validation('trial', { mode: 'shadow', rules: [{ name: 'dupes', json: {} }] });
    const body = '{"a":1,"a":2}';
    const { verdict, t, decisions, shadow } = await run([doc], { headers: json, body });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(decisions).toEqual(['shop/trial#dupes shadow_failed']);
    expect(shadow).toEqual(['shop/trial#dupes']);
    expect((await t.forwarded())!.toString()).toBe(body);
  });
});
