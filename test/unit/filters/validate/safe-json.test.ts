import { describe, expect, it } from 'vitest';
import type { JsonLimits } from '../../../../src/filters/validate/safe-json.ts';
import { checkJsonScan, loosestLimits, scanJson } from '../../../../src/filters/validate/safe-json.ts';
import { DEFAULT_JSON_LIMITS } from '../../../../src/policy/kinds/validation-policy.ts';

/* The safe-JSON pass on its own: what JSON.parse accepts silently, refused with its own code. */

const check = (body: string | Buffer, limits: JsonLimits = DEFAULT_JSON_LIMITS) => {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  return checkJsonScan(scanJson(bytes, limits), limits);
};

describe('safe JSON: one pass over the bytes', () => {
  it.each<[string, string, string | undefined]>([
    ['an ordinary body', '{"item":"ABC-1","qty":2,"tags":["a","b"],"nested":{"ok":true,"n":null}}', undefined],
    ['a key repeated', '{"role":"user","role":"admin"}', 'validate.json_duplicate_key'],
    ['a key repeated through an escape (JSON.parse sees one key)', '{"role":"user","\\u0072ole":"admin"}', 'validate.json_duplicate_key'],
    ['a key repeated in a nested object', '{"a":{"x":1,"y":2,"x":3}}', 'validate.json_duplicate_key'],
    ['the same key in sibling objects is fine', '[{"x":1},{"x":2}]', undefined],
    ['the same key at two levels is fine', '{"x":{"x":1}}', undefined],
    ['a key repeated after a nested object closed', '{"a":{"b":1,"c":{"a":2}},"d":[{"a":3}],"a":4}', 'validate.json_duplicate_key'],
    ['the same keys in sibling objects at depth', '{"x":{"k":1,"j":2},"y":{"k":3,"j":4},"z":[{"k":5},{"k":6}]}', undefined],
    ['a key repeated among many (past the pairwise compare)', `{${Array.from({ length: 40 }, (_, i) => `"key${i}":${i}`).join(',')},"key7":0}`, 'validate.json_duplicate_key'],
    ['many keys, an escaped one, then its plain twin', `{${Array.from({ length: 5 }, (_, i) => `"k${i}":${i}`).join(',')},"\\u00e9":1,"é":2}`, 'validate.json_duplicate_key'],
    ['keys of equal length that differ late', '{"prefix_000001":1,"prefix_000002":2,"prefix_000003":3}', undefined],
    ['brackets and quotes inside strings are not structure', '{"a":"}}]]{{[[\\"x\\":1,\\"x\\":2","b":"\\\\"}', undefined],
    ['an integer past 2^53', '{"id":9007199254740993}', 'validate.json_unsafe_number'],
    ['a negative integer past -2^53', '[-9007199254740993]', 'validate.json_unsafe_number'],
    ['the largest safe integer', '{"id":9007199254740991}', undefined],
    ['a number that overflows to Infinity', '{"x":1e400}', 'validate.json_unsafe_number'],
    ['a long decimal is a float, as written', '{"x":3.14159265358979323846}', undefined],
    ['an escaped lone high surrogate', '{"name":"\\ud800"}', 'validate.json_invalid_utf8'],
    ['an escaped lone low surrogate', '{"name":"x\\uDC00"}', 'validate.json_invalid_utf8'],
    ['a lone surrogate in a key', '{"\\ud83d":1}', 'validate.json_invalid_utf8'],
    ['an escaped surrogate pair is one character', '{"emoji":"\\ud83d\\ude00"}', undefined],
  ])('%s', (_name, body, code) => {
    expect(check(body)?.code).toBe(code);
    // Each of these is something JSON.parse takes without a word.
    expect(() => JSON.parse(body)).not.toThrow();
  });

  it('refuses bytes that are not UTF-8, and an overlong or a raw surrogate encoding', () => {
    expect(check(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]))).toEqual({ code: 'validate.json_invalid_utf8', reason: 'request body is not valid UTF-8' });
    expect(check(Buffer.concat([Buffer.from('["'), Buffer.from([0xc0, 0xaf]), Buffer.from('"]')]))?.code).toBe('validate.json_invalid_utf8');
    expect(check(Buffer.concat([Buffer.from('["'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"]')]))?.code).toBe('validate.json_invalid_utf8');
  });

  it('caps nesting depth: the top-level value is level 1', () => {
    const limits = { ...DEFAULT_JSON_LIMITS, maxDepth: 3 };
    expect(check('{"a":[{"b":1}]}', limits)).toBeUndefined();
    expect(check('{"a":[{"b":[1]}]}', limits)).toEqual({ code: 'validate.json_too_deep', reason: 'request body nests JSON deeper than 3 levels' });
    expect(check('[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]')?.code).toBe('validate.json_too_deep');
  });

  it("keeps every level's facts while a body nests past the levels it tracks at first (16)", () => {
    const deep = (levels: number) => `${'{"k":'.repeat(levels)}1${'}'.repeat(levels)}`;
    expect(check(`{"a":1,"b":${deep(40)},"c":2}`)).toBeUndefined();
    // The top object's keys, counts and kind are still there once the deep part closes.
    expect(check(`{"a":1,"b":${deep(40)},"a":2}`)?.code).toBe('validate.json_duplicate_key');
    expect(check(`{"a":1,"b":${deep(40)},"c":2,"d":3}`, { ...DEFAULT_JSON_LIMITS, maxObjectMembers: 3 })?.code).toBe('validate.json_too_many_members');
    expect(check(`[1,${deep(40)},2,3,4]`, { ...DEFAULT_JSON_LIMITS, maxArrayItems: 4 })?.code).toBe('validate.json_too_many_members');
    expect(check(`[1,${deep(40)},2,3]`, { ...DEFAULT_JSON_LIMITS, maxArrayItems: 4 })).toBeUndefined();
    expect(check(deep(40), { ...DEFAULT_JSON_LIMITS, maxDepth: 40 })).toBeUndefined();
    expect(check(deep(41), { ...DEFAULT_JSON_LIMITS, maxDepth: 40 })?.code).toBe('validate.json_too_deep');
  });

  it('caps members per object and items per array, each on its own', () => {
    const limits = { ...DEFAULT_JSON_LIMITS, maxObjectMembers: 3, maxArrayItems: 4 };
    expect(check('{"a":1,"b":2,"c":3}', limits)).toBeUndefined();
    expect(check('{"a":1,"b":2,"c":3,"d":4}', limits)).toEqual({ code: 'validate.json_too_many_members', reason: 'request body has an object with more than 3 members' });
    expect(check('[1,"two",{},[],null]', limits)).toEqual({ code: 'validate.json_too_many_members', reason: 'request body has an array with more than 4 items' });
    expect(check('[[1,2,3,4],[1,2,3,4],{"a":[1,2,3,4]}]', limits)).toBeUndefined();
    expect(check('[]', limits)).toBeUndefined();
    expect(check('{}', limits)).toBeUndefined();
  });

  it('allows unsafe numbers when the rule says so, and still refuses the rest', () => {
    const allow = { ...DEFAULT_JSON_LIMITS, unsafeNumbers: 'allow' as const };
    expect(check('{"id":12345678901234567890}', allow)).toBeUndefined();
    expect(check('{"id":12345678901234567890,"id":1}', allow)?.code).toBe('validate.json_duplicate_key');
  });

  it('stops at the loosest limit it was given: a bomb costs the bytes up to it, and every stricter rule still refuses', () => {
    const bomb = Buffer.from(`[${'0,'.repeat(500_000)}0]`);
    const strict = { ...DEFAULT_JSON_LIMITS, maxArrayItems: 10 };
    const loose = { ...DEFAULT_JSON_LIMITS, maxArrayItems: 100 };
    const scan = scanJson(bomb, loosestLimits([strict, loose]));
    expect(scan.arrayItems).toBe(101); // stopped one past the loosest limit, not at 500 001
    expect(checkJsonScan(scan, strict)?.code).toBe('validate.json_too_many_members');
    expect(checkJsonScan(scan, loose)?.code).toBe('validate.json_too_many_members');
  });

  it('reports what it met first, in a fixed order per rule: UTF-8, duplicate, depth, members, numbers', () => {
    expect(check('{"a":99999999999999999999,"a":1}')?.code).toBe('validate.json_duplicate_key');
    expect(check('[99999999999999999999,[[1]]]', { ...DEFAULT_JSON_LIMITS, maxDepth: 2 })?.code).toBe('validate.json_too_deep');
  });
});
