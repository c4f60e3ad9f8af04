import { createRequire } from 'node:module';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';

/** The first way a JSON value fails its schema: where (a JSON pointer) and what ajv says. */
interface SchemaViolation {
  readonly pointer: string;
  readonly message: string;
}

export type JsonSchemaCheck = (value: unknown) => SchemaViolation | undefined;

/** Compiles one JSON Schema into a check; throws when ajv cannot compile it. */
export type JsonSchemaCompiler = (schema: Readonly<Record<string, unknown>>) => JsonSchemaCheck;

export interface JsonSchemaCompilerOptions {
  /** A configured ajv instance (tests count them); the default is meshgate's settings below. */
  readonly newAjv?: () => Ajv;
  /** Compiles before the compiler moves to a fresh instance (see createJsonSchemaCompiler). */
  readonly compilesPerInstance?: number;
}

/** meshgate's ajv settings; src/policy/json-schema-meta.cjs is generated with them too. */
export const AJV_OPTIONS = Object.freeze({
  strict: false, // unknown keywords (x-*, OpenAPI's) are ignored, as most JSON Schema tools do
  allErrors: false, // the first failure is all a deny names; stopping there is cheaper
  logger: false as const, // never write to the console; compile errors are thrown and logged by the caller
  addUsedSchema: false, // schemas are not registered by $id, so two rules may share one
  validateFormats: true,
});

/** The meta-schema every ValidationPolicy schema is checked against (ajv's default; `$schema` may name it). */
export const DRAFT_07 = 'http://json-schema.org/draft-07/schema';

/** ~5 KB each (one small object schema): an instance holds at most ~0.3 MB of compiled schemas. */
const COMPILES_PER_INSTANCE = 64;

/** Pointers and messages name parts of the caller's body: cut so a deny never echoes much of it. */
const MAX_POINTER = 120;
const MAX_MESSAGE = 160;

/**
 * A compiler of ValidationPolicy JSON Schemas. A sidecar makes one and gives
 * it to both its policy validator, which compiles each schema of a received
 * document to refuse what ajv cannot compile, and its validate filter, which
 * checks bodies against the same schemas: the filter gets the function the
 * validator compiled a moment before, and no second ajv instance is made
 * (each schema compiles in about a millisecond). Each schema is checked
 * against the JSON Schema meta-schema first (loadMetaSchemaValidator). The
 * policy validator already allows only local `$ref` ("#...") and checks every
 * regex for catastrophic backtracking; ajv gets no `loadSchema`, so a
 * reference it cannot resolve fails the compile instead of being fetched.
 * `compile` throws when ajv cannot compile a schema.
 *
 * The instance's compiled functions are kept by the schema's JSON text: every
 * snapshot brings every document again (new objects, mostly the same text),
 * so a schema that did not change is not compiled again.
 *
 * An ajv instance keeps every schema it compiled, and the generated function,
 * for its whole life (its code scope; `removeSchema` only clears the cache), so
 * a compiler that lives as long as the process moves to a fresh instance after
 * `compilesPerInstance` compiles (and forgets the old one's functions): ~5 KB
 * per schema kept at most that many times. Checks made earlier keep working:
 * each holds its own function.
 */
export function createJsonSchemaCompiler(options: JsonSchemaCompilerOptions = {}): JsonSchemaCompiler {
  const newAjv = options.newAjv ?? defaultAjv;
  const compilesPerInstance = options.compilesPerInstance ?? COMPILES_PER_INSTANCE;
  let ajv: Ajv | undefined;
  let compiles = 0;
  let compiled = new Map<string, ValidateFunction>();
  let meta: ValidateFunction | undefined;
  return (schema) => {
    const text = JSON.stringify(schema);
    let validate = compiled.get(text);
    if (validate === undefined) {
      if (ajv === undefined || compiles >= compilesPerInstance) {
        ajv = newAjv();
        compiles = 0;
        compiled = new Map();
      }
      meta ??= loadMetaSchemaValidator();
      checkAgainstMetaSchema(ajv, meta, schema); // a schema it refuses never reaches the instance
      compiles++; // one ajv refuses counts too: it may have registered parts of it
      validate = ajv.compile(schema);
      compiled.set(text, validate);
    }
    return checkOf(validate);
  };
}

function checkOf(validate: ValidateFunction): JsonSchemaCheck {
  return (value) => {
    if (validate(value)) return undefined;
    const first = validate.errors?.[0];
    return first ? violationOf(first) : { pointer: '/', message: 'does not match the schema' };
  };
}

/**
 * An ajv instance with meshgate's settings and the standard formats. It does not check schemas against
 * the meta-schema itself: the compiler does, before each compile, with the validator ajv's standalone
 * code generated ahead (json-schema-meta.cjs), so no instance compiles the meta-schema at run time.
 */
export function defaultAjv(): Ajv {
  const { Ajv: AjvClass, addFormats } = loadAjv();
  const ajv = new AjvClass({ ...AJV_OPTIONS, validateSchema: false });
  addFormats(ajv);
  return ajv;
}

/**
 * What ajv's own check does when `validateSchema` is on, with the same errors: `$schema`, when present,
 * must name the draft-07 meta-schema (ajv knows no other here), and the schema must validate against it.
 */
function checkAgainstMetaSchema(ajv: Ajv, meta: ValidateFunction, schema: Readonly<Record<string, unknown>>): void {
  const named = schema.$schema;
  if (named !== undefined && typeof named !== 'string') throw new Error('$schema must be a string');
  // An empty one means the default, as in ajv.
  if (named !== undefined && named !== '' && named !== DRAFT_07 && named !== `${DRAFT_07}#`) throw new Error(`no schema with key or ref "${named}"`);
  if (!meta(schema)) throw new Error(`schema is invalid: ${ajv.errorsText(meta.errors)}`);
}

/**
 * The draft-07 meta-schema's validator as ajv compiles it, generated ahead by ajv's standalone code
 * (scripts/json-schema-meta.ts; a test fails when it is stale). Compiling the meta-schema took an ajv
 * instance's first compile 28-44 ms (and 0.7 MiB of heap) in every sidecar with a jsonSchema rule, at
 * start and again on each new instance; loading this file takes 2-3 ms. Beside this module in the
 * sources, beside the chunks in the bundle (scripts/build.ts copies it).
 */
function loadMetaSchemaValidator(): ValidateFunction {
  const require = createRequire(import.meta.url);
  return require('./json-schema-meta.cjs') as ValidateFunction;
}

/**
 * ajv and ajv-formats, loaded on the first compiler made: only a policy with a
 * ValidationPolicy `jsonSchema` rule makes one, and every other sidecar with a
 * policy would load ~60 modules for nothing (issue #13: what is not configured
 * is not loaded). Synchronous (both are CommonJS) because policy validation is:
 * a schema is compiled inside the validator's refinement.
 */
function loadAjv(): { Ajv: typeof Ajv; addFormats: (ajv: Ajv) => Ajv } {
  const require = createRequire(import.meta.url);
  // ajv-formats' module.exports is the plugin itself.
  return { Ajv: (require('ajv') as { Ajv: typeof Ajv }).Ajv, addFormats: require('ajv-formats') as (ajv: Ajv) => Ajv };
}

function violationOf(error: ErrorObject): SchemaViolation {
  const pointer = error.instancePath === '' ? '/' : error.instancePath;
  return { pointer: cut(pointer, MAX_POINTER), message: cut(error.message ?? 'does not match the schema', MAX_MESSAGE) };
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
