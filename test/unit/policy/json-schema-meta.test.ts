import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { jsonSchemaMetaSource } from '../../../scripts/json-schema-meta-source.ts';
import { AJV_OPTIONS, createJsonSchemaCompiler } from '../../../src/policy/json-schema.ts';

/*
 * The meta-schema check runs from a validator generated ahead (src/policy/json-schema-meta.cjs) instead
 * of ajv compiling the meta-schema in every sidecar: it must be what ajv generates now, and refuse
 * exactly what ajv's own check refuses, with the same words.
 */

/** ajv as it was configured before: checking schemas against the meta-schema itself. */
function ajvCheckingItself(): Ajv {
  const require = createRequire(import.meta.url);
  const { Ajv: AjvClass } = require('ajv') as { Ajv: new (options: object) => Ajv };
  const ajv = new AjvClass({ ...AJV_OPTIONS });
  (require('ajv-formats') as (ajv: Ajv) => Ajv)(ajv);
  return ajv;
}

function outcome(compile: () => unknown): string {
  try {
    compile();
    return 'compiles';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('the generated meta-schema validator', () => {
  it('is what ajv generates now (after an ajv upgrade: npm run gen:json-schema-meta)', () => {
    const file = new URL('../../../src/policy/json-schema-meta.cjs', import.meta.url);
    expect(readFileSync(file, 'utf8')).toBe(jsonSchemaMetaSource());
  });

  it.each<[string, Record<string, unknown>]>([
    ['an ordinary schema', { type: 'object', required: ['item'], properties: { item: { type: 'string', maxLength: 8 } } }],
    ['an unknown type', { type: 'strng' }],
    ['a keyword of the wrong shape', { type: 'object', required: 'item' }],
    ['a negative length', { minLength: -1 }],
    ['a wrong additionalItems', { items: [{ type: 'string' }], additionalItems: 5 }],
    ['a nested error', { properties: { a: { properties: { b: { enum: 'x' } } } } }],
    ['$schema naming draft-07', { $schema: 'http://json-schema.org/draft-07/schema#', type: 'string' }],
    ['$schema naming draft-07 without #', { $schema: 'http://json-schema.org/draft-07/schema', type: 'string' }],
    ['$schema empty', { $schema: '', type: 'string' }],
    ['$schema naming 2020-12', { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object' }],
    ['$schema naming draft-07 over https', { $schema: 'https://json-schema.org/draft-07/schema#', type: 'object' }],
    ['$schema not a string', { $schema: 7, type: 'object' }],
    ['a local $ref to nothing', { properties: { a: { $ref: '#/$defs/missing' } } }],
  ])('%s: the same outcome as ajv checking it itself', (_name, schema) => {
    const before = outcome(() => ajvCheckingItself().compile(schema));
    expect(outcome(() => createJsonSchemaCompiler()(schema))).toBe(before);
  });
});
