import type { z } from 'zod';
import { readTextFile } from './text-file.ts';
import type { YamlBounds } from './yaml-bounded.ts';
import { parseYaml } from './yaml-bounded.ts';

/**
 * A configuration problem, already worded as the lines the user sees (one per
 * problem). Line breaks and control characters a message quotes from the file
 * (a key, a value) are escaped, so each problem stays one line whatever the
 * file holds.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** One problem per element of `lines` when given; otherwise `message` is one problem. */
  constructor(message: string, lines?: readonly string[]) {
    super(lines ? lines.map(oneLine).join('\n') : oneLine(message));
  }
}

/** C0/C1 controls and the Unicode line and paragraph separators, as \uXXXX escapes (\n and \r as such). */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/**
 * Bounds on a role's config file, checked before the work they bound: the
 * size before the file is read, nodes and documents before it is parsed,
 * keys per mapping and aliases before it is converted. The largest real
 * config (a static registry of a few hundred services) is far below each.
 */
export interface ConfigFileLimits extends YamlBounds {
  readonly maxBytes: number;
  /** Problem lines reported for one file; the rest are counted in a last line. */
  readonly maxProblems: number;
}

const CONFIG_FILE_LIMITS: ConfigFileLimits = Object.freeze({
  maxBytes: 1_048_576,
  maxNodes: 100_000,
  maxDocuments: 1,
  maxKeysPerMapping: 1000,
  maxAliasCount: 100,
  maxProblems: 20,
});

/**
 * Reads, parses, validates, defaults and freezes one YAML file. Every role loads
 * its config through here, so every bad file fails the same way, one line per
 * problem: `FILE: FIELD.PATH: what is wrong (expected ...)`, or
 * `FILE:LINE:COLUMN: ...` where the problem is in the YAML itself.
 */
export async function loadConfigFile<S extends z.ZodType>(file: string, schema: S, limits: ConfigFileLimits = CONFIG_FILE_LIMITS): Promise<z.output<S>> {
  const read = await readTextFile(file, limits.maxBytes);
  if (!read.ok) throw new ConfigError(`${file}: ${read.reason}`);
  return parseConfigText(read.text, file, schema, limits);
}

export function parseConfigText<S extends z.ZodType>(text: string, file: string, schema: S, limits: ConfigFileLimits = CONFIG_FILE_LIMITS): z.output<S> {
  const bytes = Buffer.byteLength(text);
  if (bytes > limits.maxBytes) throw new ConfigError(`${file}: file too large: at most ${limits.maxBytes} bytes (got ${bytes})`);
  const parsed = parseYaml(text, limits, { maxProblems: limits.maxProblems });
  if (!parsed.ok) throw new ConfigError(`${file}: ${parsed.reason}`);
  const doc = parsed.documents[0];
  if (doc && doc.problems.length > 0) {
    throw configError(
      file,
      doc.problems.map((p) => {
        const at = p.line > 0 ? `${file}:${p.line}:${p.column}` : file;
        return p.syntax ? `${at}: invalid YAML: ${p.reason}` : `${at}: ${formatPath(p.path)}: ${p.reason}`;
      }),
      limits.maxProblems,
    );
  }
  const raw: unknown = doc?.value ?? {};
  // jitless: a config is parsed once, and zod's compiled fast path (new Function per object schema) costs more to build than it saves.
  const result = schema.safeParse(raw, { jitless: true });
  if (!result.success) {
    throw configError(
      file,
      result.error.issues.flatMap((issue) => describeIssue(issue, raw).map((line) => `${file}: ${line}`)),
      limits.maxProblems,
    );
  }
  return deepFreeze(result.data);
}

function configError(file: string, lines: string[], max: number): ConfigError {
  const shown = lines.length > max ? [...lines.slice(0, max - 1), `${file}: ... and ${lines.length - max + 1} more problems`] : lines;
  return new ConfigError(shown.join('\n'), shown);
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    // A key that is not a plain name (spaces, dots, line breaks) is quoted, so the path reads unambiguously.
    else if (/^[A-Za-z_$][\w$-]*$/.test(String(key))) out += out === '' ? String(key) : `.${String(key)}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out === '' ? '(top level)' : out;
}

/** The value at a zod issue's path in the raw input (undefined when absent). */
export function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let node: unknown = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** A value for "got ...": primitives as JSON, a list or mapping by its kind (never a deep serialisation). */
function shown(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value !== null && typeof value === 'object') return 'a mapping';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One zod issue -> its lines (unknown keys give one line per key). */
export function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string[] {
  if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown field`);
  const where = formatPath(issue.path);
  const actual = valueAt(raw, issue.path);
  if (issue.code === 'invalid_type' && actual === undefined) return [`${where}: missing required field (expected ${issue.expected})`];
  if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input')) return [`${where}: expected ${issue.expected}, got ${shown(actual)}`];
  const got = actual === undefined || typeof actual === 'object' ? '' : `, got ${shown(actual)}`;
  return [`${where}: ${issue.message}${got}`];
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}
