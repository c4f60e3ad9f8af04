import { z } from 'zod';
import type { JsonSchemaCompiler } from '../json-schema.ts';
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

const CHECK_FIELDS = ['maxBodyBytes', 'contentTypes', 'requiredHeaders', 'maxHeaderBytes', 'jsonSchema', 'json', 'injection'] as const;

const INJECTION_CLASSES = ['sql', 'xss', 'traversal', 'command'] as const;

/** Safe-JSON limits of a rule without a `json` field (src/filters/validate/safe-json.ts applies them). */
export const DEFAULT_JSON_LIMITS = Object.freeze({ maxDepth: 64, maxObjectMembers: 1000, maxArrayItems: 10_000, unsafeNumbers: 'refuse' as const });

/** The deepest a rule may allow: ajv checks a recursive schema by recursion (10 000 levels overflowed the stack). */
const MAX_JSON_DEPTH = 1000;
const INSPECT_PARTS = ['path', 'query', 'body'] as const;

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

function validationPolicySpecSchema(limits: PolicyLimits, compile: JsonSchemaCompiler) {
  const p = schemaParts(limits);
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
      compile(schema);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `not a JSON Schema ajv can compile: ${(err as Error).message.slice(0, 200)}` });
    }
  });
  const safeJson = z.strictObject({
    maxDepth: z.number().int().min(1).max(MAX_JSON_DEPTH).default(DEFAULT_JSON_LIMITS.maxDepth).describe('Objects and arrays inside each other (validate.json_too_deep).'),
    maxObjectMembers: z.number().int().min(1).max(1_000_000).default(DEFAULT_JSON_LIMITS.maxObjectMembers).describe('Members of one object (validate.json_too_many_members).'),
    maxArrayItems: z.number().int().min(1).max(1_000_000).default(DEFAULT_JSON_LIMITS.maxArrayItems).describe('Items of one array (validate.json_too_many_members).'),
    unsafeNumbers: z
      .enum(['refuse', 'allow'])
      .default(DEFAULT_JSON_LIMITS.unsafeNumbers)
      .describe('Integers beyond 2^53 - 1 and numbers that overflow: refuse (validate.json_unsafe_number) or allow.'),
  });
  const injection = z.strictObject({
    mode: z
      .enum(['block', 'log', 'shadow'])
      .default('block')
      .describe('block: refuse at the threshold (validate.injection; shadow in a shadow document); log: log the finding only; shadow: as a shadow rule, for this check alone.'),
    threshold: z.number().int().min(1).max(100).default(5).describe('Anomaly score at which the call is refused (each matching signature adds 2 to 5).'),
    classes: p
      .list(z.enum(INJECTION_CLASSES))
      .min(1)
      .default([...INJECTION_CLASSES])
      .describe('Which signature classes run.'),
    inspect: p
      .list(z.enum(INSPECT_PARTS))
      .default([...INSPECT_PARTS])
      .describe('The path, the query parameters, the body (JSON strings and keys, form fields, a text body).'),
    headers: p.list(headerName).default([]).describe('Headers whose values are inspected too (cookie: each cookie value).'),
    maxInspectBytes: byteSize
      .default(65_536)
      .refine((n) => n >= 1024 && n <= 16_777_216, 'expected 1KiB to 16MiB')
      .describe('Most text inspected per call; a call carrying more is refused (validate.body_too_large): no signature scan runs unbounded.'),
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
      json: safeJson.optional().describe('Limits on a JSON body the rule reads (jsonSchema, injection on a JSON body, or this field alone), checked before it is parsed.'),
      injection: injection.optional().describe('Injection detection: SQL, XSS, path traversal and command injection signatures, scored per call (OWASP CRS style).'),
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

/** `compile`: the JSON Schema compiler that checks each `jsonSchema` compiles (ajv is loaded on its first schema). */
export function validationPolicySchema(limits: PolicyLimits, compile: JsonSchemaCompiler = createJsonSchemaCompiler()) {
  return documentSchema('ValidationPolicy', schemaParts(limits), validationPolicySpecSchema(limits, compile));
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
