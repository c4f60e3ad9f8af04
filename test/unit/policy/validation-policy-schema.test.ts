import { describe, expect, it } from 'vitest';
import { doc, errorLines, validDocument } from './helpers.ts';

/*
 * A ValidationPolicy's jsonSchema is compiled by the policy validator (the
 * policy server, `meshgate policy check`, the sidecar on every snapshot), so
 * a schema the validate filter could not use is refused with the document,
 * never shipped to a sidecar that would have to fail closed on it.
 */

const KEY = 'p.yaml: document 0 (ValidationPolicy/shop/p1)';
const rule = (schema: string) => doc('ValidationPolicy', `rules: [{ name: a, jsonSchema: ${schema} }]`);

describe('ValidationPolicy jsonSchema: compiled when the document is validated', () => {
  it.each([
    ['an unknown type', '{ type: strng }', /^spec\.rules\[0\]\.jsonSchema: not a JSON Schema ajv can compile: schema is invalid: data\/type must be equal to one of the allowed values/],
    ['a local $ref to nothing', '{ properties: { a: { $ref: "#/$defs/missing" } } }', /^spec\.rules\[0\]\.jsonSchema: not a JSON Schema ajv can compile: can't resolve reference #\/\$defs\/missing/],
    ['a keyword of the wrong shape', '{ required: id }', /^spec\.rules\[0\]\.jsonSchema: not a JSON Schema ajv can compile: schema is invalid: data\/required must be array/],
  ])('refuses %s', (_name, schema, reason) => {
    const lines = errorLines(rule(schema));
    expect(lines).toHaveLength(1);
    expect(lines[0]!.startsWith(`${KEY}: `)).toBe(true);
    expect(lines[0]!.slice(KEY.length + 2)).toMatch(reason);
  });

  it('accepts local references, formats and keywords it does not know (x-*, OpenAPI)', () => {
    expect(() =>
      validDocument(
        rule(
          '{ type: object, x-owner: orders-team, properties: { id: { $ref: "#/$defs/id" }, at: { type: string, format: date-time }, m: { type: string, nullable: true, example: hi } }, $defs: { id: { type: string, pattern: "^[a-z]+$" } } }',
        ),
      ),
    ).not.toThrow();
  });
});

describe('ValidationPolicy json and injection', () => {
  const one = (fields: string) => doc('ValidationPolicy', `rules: [{ name: a, ${fields} }]`);

  it('fills the defaults, and what it outputs validates again unchanged', () => {
    const out = validDocument(one('injection: {}, json: {}'));
    const spec = out.spec as { rules: Record<string, unknown>[] };
    expect(spec.rules[0]).toMatchObject({
      json: { maxDepth: 64, maxObjectMembers: 1000, maxArrayItems: 10_000, unsafeNumbers: 'refuse' },
      injection: { mode: 'block', threshold: 5, classes: ['sql', 'xss', 'traversal', 'command'], inspect: ['path', 'query', 'body'], headers: [], maxInspectBytes: 65_536 },
    });
    // JSON is YAML: the sidecar re-validates what the server output.
    expect(validDocument(JSON.stringify(out))).toEqual(out);
  });

  it('a rule with only json or only injection is a rule with a check', () => {
    expect(() => validDocument(one('json: { maxDepth: 8 }'))).not.toThrow();
    expect(() => validDocument(one('injection: { mode: log, headers: [User-Agent], maxInspectBytes: 8KiB }'))).not.toThrow();
  });

  it.each([
    ['an unknown mode', 'injection: { mode: deny }', /^spec\.rules\[0\]\.injection\.mode: /],
    ['an unknown class', 'injection: { classes: [ldap] }', /^spec\.rules\[0\]\.injection\.classes\[0\]: /],
    ['no class', 'injection: { classes: [] }', /^spec\.rules\[0\]\.injection\.classes: /],
    ['a threshold of 0', 'injection: { threshold: 0 }', /^spec\.rules\[0\]\.injection\.threshold: /],
    ['a cap past 16 MiB', 'injection: { maxInspectBytes: 64MiB }', /^spec\.rules\[0\]\.injection\.maxInspectBytes: expected 1KiB to 16MiB/],
    ['a depth past 1000', 'json: { maxDepth: 5000 }', /^spec\.rules\[0\]\.json\.maxDepth: /],
    ['an unknown field', 'json: { maxKeys: 5 }', /^spec\.rules\[0\]\.json\.maxKeys: unknown field/],
  ])('refuses %s', (_name, fields, reason) => {
    const lines = errorLines(one(fields));
    expect(lines).toHaveLength(1);
    expect(lines[0]!.slice(KEY.length + 2)).toMatch(reason);
  });
});
