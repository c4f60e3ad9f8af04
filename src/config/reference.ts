import { z } from 'zod';
import { byteSize, duration } from './durations.ts';

/*
 * The README's configuration reference, generated from a zod schema so the
 * descriptions are written once (in the schema). `npm run docs:config`
 * rewrites the README section; test/unit/docs.test.ts fails when it is stale.
 *
 * We walk the zod definitions rather than z.toJSONSchema(): JSON Schema
 * cannot say "duration" or "size", and it reports a duration's default in
 * milliseconds as a number although the file must spell it `15s`.
 */

const CONFIG_REFERENCE_START = '<!-- config-reference:start -->';
const CONFIG_REFERENCE_END = '<!-- config-reference:end -->';

type Schema = z.core.$ZodType;

interface Row {
  readonly path: string;
  readonly type: string;
  readonly default: string;
  readonly description: string;
}

/** What a field's outer wrappers say: how it defaults, and its description. */
interface Unwrapped {
  readonly inner: Schema;
  readonly default: string;
  readonly description: string;
}

// Identity, not shape: these two are the only custom scalar types of our config files.
const NAMED_TYPES = new Map<Schema, string>([
  [duration, 'duration'],
  [byteSize, 'size'],
]);

const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'nonoptional', 'catch']);

/**
 * A markdown table of every field of `schema`: dotted path (`[]` marks an
 * array element), type, default, description. Pure: schema in, text out,
 * ending with a newline.
 */
export function renderConfigReference(schema: Schema): string {
  const rows: Row[] = [];
  walkObject(schema, '', rows);
  const lines = ['| Field | Type | Default | Description |', '| --- | --- | --- | --- |'];
  for (const row of rows) {
    lines.push(`| \`${row.path}\` | ${cell(row.type)} | ${cell(row.default)} | ${cell(row.description)} |`);
  }
  return `${lines.join('\n')}\n`;
}

/** The text between the two markers, or undefined when either is missing. */
export function readConfigReference(readme: string): string | undefined {
  const start = readme.indexOf(CONFIG_REFERENCE_START);
  const end = readme.indexOf(CONFIG_REFERENCE_END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start + CONFIG_REFERENCE_START.length, end);
}

/** What belongs between the markers for a rendered table: blank lines keep it a block of its own. */
export function configReferenceSection(table: string): string {
  return `\n\n${table}\n`;
}

/** `readme` with the section between the markers replaced by `table`. */
export function replaceConfigReference(readme: string, table: string): string {
  const start = readme.indexOf(CONFIG_REFERENCE_START);
  const end = readme.indexOf(CONFIG_REFERENCE_END);
  if (start < 0 || end < start) {
    throw new Error(`README has no ${CONFIG_REFERENCE_START} ... ${CONFIG_REFERENCE_END} section`);
  }
  return readme.slice(0, start + CONFIG_REFERENCE_START.length) + configReferenceSection(table) + readme.slice(end);
}

function walkObject(schema: Schema, prefix: string, rows: Row[]): void {
  const def = schema._zod.def as z.core.$ZodObjectDef;
  for (const [key, field] of Object.entries(def.shape)) {
    walkField(field, prefix === '' ? key : `${prefix}.${key}`, rows);
  }
}

function walkField(field: Schema, path: string, rows: Row[]): void {
  const { inner, default: dflt, description } = unwrap(field);
  rows.push({ path, type: typeName(inner), default: dflt, description });
  const def = inner._zod.def;
  if (def.type === 'object') {
    walkObject(inner, path, rows);
  } else if (def.type === 'array') {
    const element = unwrap((def as z.core.$ZodArrayDef).element).inner;
    if (element._zod.def.type === 'object') walkObject(element, `${path}[]`, rows);
  }
}

function unwrap(field: Schema): Unwrapped {
  let schema = field;
  let dflt: string | undefined;
  let optional = false;
  let description: string | undefined;
  for (;;) {
    description ??= z.globalRegistry.get(schema)?.description;
    const def = schema._zod.def;
    if (!WRAPPERS.has(def.type) || NAMED_TYPES.has(schema)) break;
    const inner = (def as z.core.$ZodOptionalDef).innerType;
    if (def.type === 'optional') optional = true;
    // The outermost default wins: it is the one a missing field gets.
    if ((def.type === 'default' || def.type === 'prefault') && dflt === undefined) {
      dflt = formatDefault((def as z.core.$ZodDefaultDef).defaultValue, unwrapPlain(inner));
    }
    schema = inner;
  }
  return { inner: schema, default: dflt ?? (optional ? '—' : '**required**'), description: description ?? '' };
}

function unwrapPlain(schema: Schema): Schema {
  let s = schema;
  while (WRAPPERS.has(s._zod.def.type) && !NAMED_TYPES.has(s)) s = (s._zod.def as z.core.$ZodOptionalDef).innerType;
  return s;
}

function typeName(schema: Schema): string {
  const named = NAMED_TYPES.get(schema);
  if (named) return named;
  const def = schema._zod.def;
  switch (def.type) {
    case 'string':
      return (def as z.core.$ZodStringFormatDef).format === 'url' ? 'URL' : 'string';
    case 'number':
      return numberType(def as z.core.$ZodNumberDef);
    case 'boolean':
      return 'boolean';
    case 'enum':
      return `one of ${Object.values((def as z.core.$ZodEnumDef).entries)
        .map((v) => `\`${String(v)}\``)
        .join(', ')}`;
    case 'literal':
      return (def as z.core.$ZodLiteralDef<z.core.util.Literal>).values.map((v) => `\`${String(v)}\``).join(', ');
    case 'object':
      return 'object';
    case 'array': {
      const element = unwrapPlain((def as z.core.$ZodArrayDef).element);
      if (element._zod.def.type === 'object') return 'list of objects';
      if (element._zod.def.type === 'enum' && !NAMED_TYPES.has(element)) return `list, each ${typeName(element)}`;
      return `list of ${typeName(element)}`;
    }
    case 'record': {
      const rec = def as z.core.$ZodRecordDef;
      return `map of ${typeName(rec.keyType)} to ${typeName(unwrapPlain(rec.valueType))}`;
    }
    case 'union':
      return (def as z.core.$ZodUnionDef).options.map((o) => typeName(unwrapPlain(o))).join(' or ');
    case 'pipe':
      return typeName(unwrapPlain((def as z.core.$ZodPipeDef).in));
    default:
      return def.type;
  }
}

function numberType(def: z.core.$ZodNumberDef): string {
  let integer = false;
  let min: number | undefined;
  let max: number | undefined;
  for (const check of def.checks ?? []) {
    const c = check._zod.def as { check: string; format?: string; value?: unknown };
    if (c.check === 'number_format' && c.format !== undefined && /int/.test(c.format)) integer = true;
    if (c.check === 'greater_than' && typeof c.value === 'number') min = c.value;
    if (c.check === 'less_than' && typeof c.value === 'number') max = c.value;
  }
  const base = integer ? 'integer' : 'number';
  if (min !== undefined && max !== undefined) return `${base} ${min}–${max}`;
  if (min !== undefined) return `${base} ≥ ${min}`;
  if (max !== undefined) return `${base} ≤ ${max}`;
  return base;
}

function formatDefault(value: unknown, type: Schema): string {
  const named = NAMED_TYPES.get(type);
  if (named === 'duration' && typeof value === 'number') return `\`${formatDuration(value)}\``;
  if (named === 'size' && typeof value === 'number') return `\`${formatSize(value)}\``;
  return `\`${yamlFlow(value)}\``;
}

/** Milliseconds in the largest unit the duration syntax has that divides them. */
function formatDuration(ms: number): string {
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms > 0 && ms % 1_000 === 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}

function formatSize(bytes: number): string {
  if (bytes > 0 && bytes % 1024 ** 3 === 0) return `${bytes / 1024 ** 3}GiB`;
  if (bytes > 0 && bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2}MiB`;
  if (bytes > 0 && bytes % 1024 === 0) return `${bytes / 1024}KiB`;
  return String(bytes);
}

/** A value as the user would write it in YAML flow style. */
function yamlFlow(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(yamlFlow).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.entries(value)
      .map(([k, v]) => `${k}: ${yamlFlow(v)}`)
      .join(', ')}}`;
  }
  return String(value);
}

function cell(text: string): string {
  return text.replace(/\r?\n/g, ' ').replace(/\|/g, '\\|');
}
