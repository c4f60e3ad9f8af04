import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import type { z } from 'zod';

/**
 * A configuration problem, already worded as the single line the user sees.
 * Line breaks and control characters a message quotes from the file (a key,
 * a value) are escaped, so it stays one line whatever the file holds.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(message: string) {
    super(oneLine(message));
  }
}

/** C0/C1 controls and the Unicode line and paragraph separators, as \uXXXX escapes (\n and \r as such). */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/** Alias expansions allowed in one config file (the yaml package's default; a few anchors need far fewer). */
const MAX_ALIAS_COUNT = 100;

/**
 * Reads, parses, validates, defaults and freezes one YAML file. Every role loads
 * its config through here, so every bad file fails the same way:
 * `FILE: FIELD.PATH: what is wrong (expected ...)`.
 */
export async function loadConfigFile<S extends z.ZodType>(file: string, schema: S): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: cannot read file (${code === 'ENOENT' ? 'no such file' : code ?? String(err)})`);
  }
  return parseConfigText(text, file, schema);
}

export function parseConfigText<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  // logLevel error: the yaml package would otherwise print a process warning (two more lines) for a key that is a list or mapping.
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0];
    throw new ConfigError(`${file}:${line ? `${line.line}:${line.col}` : ''} invalid YAML: ${first.message.split('\n')[0]}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
  } catch (err) {
    // An alias bomb ("billion laughs") or an alias of itself: the yaml package throws, naming the attack.
    throw new ConfigError(`${file}: invalid YAML: ${(err as Error).message.split('\n')[0]} (at most ${MAX_ALIAS_COUNT} alias expansions)`);
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`${file}: ${describeIssue(issue, raw)}`);
  }
  return deepFreeze(result.data);
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

/** A value for an error message, at most 60 characters; never throws (a YAML alias can make a value contain itself). */
function shown(value: unknown): string | undefined {
  try {
    return JSON.stringify(value)?.slice(0, 60);
  } catch {
    return 'a value that contains itself (a YAML alias inside its own anchor)';
  }
}

function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string {
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    return `${formatPath([...issue.path, key])}: unknown field`;
  }
  const where = formatPath(issue.path);
  const actual = valueAt(raw, issue.path);
  if (issue.code === 'invalid_type' && actual === undefined) {
    return `${where}: missing required field (expected ${issue.expected})`;
  }
  if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input')) {
    return `${where}: expected ${issue.expected}, got ${shown(actual)}`;
  }
  const got = actual === undefined ? '' : `, got ${shown(actual)}`;
  return `${where}: ${issue.message}${got}`;
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}
