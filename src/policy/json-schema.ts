import type { ErrorObject } from 'ajv';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';

/** The first way a JSON value fails its schema: where (a JSON pointer) and what ajv says. */
interface SchemaViolation {
  readonly pointer: string;
  readonly message: string;
}

export type JsonSchemaCheck = (value: unknown) => SchemaViolation | undefined;

/** Pointers and messages name parts of the caller's body: cut so a deny never echoes much of it. */
const MAX_POINTER = 120;
const MAX_MESSAGE = 160;

/**
 * A compiler of ValidationPolicy JSON Schemas: the policy validator compiles
 * each schema once to refuse what ajv cannot compile, and the validate filter
 * makes one per snapshot to check bodies against them (an ajv
 * instance with formats costs milliseconds; each schema then about one). The
 * policy validator already allows only local `$ref` ("#...") and checks every
 * regex for catastrophic backtracking; ajv gets no `loadSchema`, so a
 * reference it cannot resolve fails the compile instead of being fetched.
 * `compile` throws when ajv cannot compile a schema.
 */
export function createJsonSchemaCompiler(): (schema: Readonly<Record<string, unknown>>) => JsonSchemaCheck {
  const ajv = new Ajv({
    strict: false, // unknown keywords (x-*, OpenAPI's) are ignored, as most JSON Schema tools do
    allErrors: false, // the first failure is all a deny names; stopping there is cheaper
    logger: false, // never write to the console; compile errors are thrown and logged by the caller
    addUsedSchema: false, // schemas are not registered by $id, so two rules may share one
    validateFormats: true,
  });
  // ajv-formats is CommonJS: its default import is the plugin itself at run time.
  (addFormats as unknown as (a: Ajv) => Ajv)(ajv);
  return (schema) => {
    const validate = ajv.compile(schema);
    return (value) => {
      if (validate(value)) return undefined;
      const first = validate.errors?.[0];
      return first ? violationOf(first) : { pointer: '/', message: 'does not match the schema' };
    };
  };
}

function violationOf(error: ErrorObject): SchemaViolation {
  const pointer = error.instancePath === '' ? '/' : error.instancePath;
  return { pointer: cut(pointer, MAX_POINTER), message: cut(error.message ?? 'does not match the schema', MAX_MESSAGE) };
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
