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
