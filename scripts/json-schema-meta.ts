import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { jsonSchemaMetaSource } from './json-schema-meta-source.ts';

/*
 * `npm run gen:json-schema-meta`: writes src/policy/json-schema-meta.cjs, the
 * JSON Schema (draft-07) meta-schema validator ajv compiles at run time,
 * generated ahead by ajv's own standalone code (src/policy/json-schema.ts says
 * why). test/unit/policy/json-schema-meta.test.ts fails when the file is not
 * what this script writes now (after an ajv upgrade): run it again.
 */

const file = path.resolve(import.meta.dirname, '..', 'src', 'policy', 'json-schema-meta.cjs');
writeFileSync(file, jsonSchemaMetaSource());
process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
