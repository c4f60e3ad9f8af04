import { z } from 'zod';
import { createJsonSchemaCompiler } from '../json-schema.ts';
import type { PolicyLimits } from '../limits.ts';
import type { RegexUse } from './common.ts';
import { byteSize, documentSchema, headerName, mode, refineUniqueNames, ruleName, schemaParts } from './common.ts';

/*
 * ValidationPolicy: input checks before the call reaches the app. The JSON
 * Schema is kept as written (the validate filter compiles it); here it is only
 * made safe to compile: every `pattern` and `patternProperties` key is a regex
 * checked for catastrophic backtracking, and `$ref` may only point inside the
 * schema (`#...`): nothing is ever fetched. A schema ajv cannot compile is
 * refused here, so it never reaches a sidecar.
 */

const CHECK_FIELDS = ['maxBodyBytes', 'contentTypes', 'requiredHeaders', 'maxHeaderBytes', 'jsonSchema'] as const;

/** Members whose values are data, not sub-schemas: a `pattern` key inside them is not a regex. */
const DATA_MEMBERS = new Set(['enum', 'const', 'examples', 'default']);

const mediaType = z
  .string()
  .max(256)
  .toLowerCase()
  .regex(/^([a-z0-9][a-z0-9!#$&^_.+-]*|\*)\/([a-z0-9][a-z0-9!#$&^_.+-]*|\*)$/, 'expected a media type like application/json or text/*');

/** Members whose keys are names (of properties, definitions...), each value a sub-schema. */
const NAME_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);

/** Calls `visit` for each keyword of a JSON Schema and of its sub-schemas, with its path. */
function walkJsonSchema(node: unknown, path: (string | number)[], visit: (key: string, value: unknown, path: (string | number)[]) => void): void {
  if (Array.isArray(node)) {
    node.forEach((item, i) => walkJsonSchema(item, [...path, i], visit));
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    visit(key, value, [...path, key]);
    if (DATA_MEMBERS.has(key)) continue;
    if (NAME_MAPS.has(key) && value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [name, sub] of Object.entries(value)) walkJsonSchema(sub, [...path, key, name], visit);
    } else {
      walkJsonSchema(value, [...path, key], visit);
    }
  }
}

function compiles(source: string): boolean {
  try {
    new RegExp(source, 'u');
    return true;
  } catch {
    return false;
  }
}

function validationPolicySpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  let compile: ReturnType<typeof createJsonSchemaCompiler> | undefined; // made on the first schema: most validators see none
  const jsonSchema = z.record(z.string(), z.unknown()).superRefine((schema, ctx) => {
    let safe = true;
    walkJsonSchema(schema, [], (key, value, path) => {
      if (key === '$ref' && (typeof value !== 'string' || !value.startsWith('#'))) {
        safe = false;
        ctx.addIssue({ code: 'custom', path, message: 'only local references ("#/...") are allowed: nothing is fetched' });
      }
      if (key === 'pattern' && typeof value !== 'string') {
        safe = false;
        ctx.addIssue({ code: 'custom', path, message: 'expected a regular expression string' });
      }
      // An invalid regex is reported by the regex check, with its path: not twice.
      if (key === 'pattern' && typeof value === 'string' && !compiles(value)) safe = false;
      if (key === 'patternProperties' && value !== null && typeof value === 'object' && !Object.keys(value).every(compiles)) safe = false;
    });
    if (!safe) return;
    try {
      compile ??= createJsonSchemaCompiler();
      compile(schema);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `not a JSON Schema ajv can compile: ${(err as Error).message.slice(0, 200)}` });
    }
  });
  const rule = z
    .strictObject({
      name: ruleName.describe('Rule name in decision ids and logs.'),
      match: p.match.optional(),
      maxBodyBytes: byteSize.optional().describe('Largest request body (validate.body_too_large).'),
      contentTypes: p.list(mediaType).min(1).optional().describe('Accepted Content-Type media types (type/subtype or type/*), lower-cased.'),
      requiredHeaders: p.list(headerName).min(1).optional().describe('Headers that must be present.'),
      maxHeaderBytes: byteSize.optional().describe('Largest total size of the request headers.'),
      jsonSchema: jsonSchema.optional().describe('JSON Schema the JSON body must satisfy; local $ref only, regexes checked for catastrophic backtracking.'),
    })
    .refine((r) => CHECK_FIELDS.some((f) => r[f] !== undefined), `expected at least one check: ${CHECK_FIELDS.join(', ')}`);
  return z
    .strictObject({
      selector: p.selector,
      mode,
      rules: p.ruleList(rule).min(1).describe('Every matching rule must pass.'),
    })
    .superRefine((spec, ctx) => refineUniqueNames(spec.rules, ctx, 'rules', 'rule name'));
}

export function validationPolicySchema(limits: PolicyLimits) {
  return documentSchema('ValidationPolicy', schemaParts(limits), validationPolicySpecSchema(limits));
}

type ValidationPolicySpec = z.output<ReturnType<typeof validationPolicySpecSchema>>;
export type ValidationPolicyDocument = z.output<ReturnType<typeof validationPolicySchema>>;
type ValidationRule = ValidationPolicySpec['rules'][number];

/** JSON Schema regexes (`pattern`, `patternProperties` keys): unanchored, `u` flag, as JSON Schema runs them. */
export function validationPolicyRegexes(doc: ValidationPolicyDocument): RegexUse[] {
  const uses: RegexUse[] = [];
  doc.spec.rules.forEach((rule, r) => {
    if (!rule.jsonSchema) return;
    walkJsonSchema(rule.jsonSchema, ['spec', 'rules', r, 'jsonSchema'], (key, value, path) => {
      if (key === 'pattern' && typeof value === 'string') uses.push({ path, written: value, source: value, flags: 'u' });
      if (key === 'patternProperties' && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        for (const source of Object.keys(value)) uses.push({ path: [...path, source], written: source, source, flags: 'u' });
      }
    });
  });
  return uses;
}
