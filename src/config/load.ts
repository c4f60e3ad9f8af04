import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import type { z } from 'zod';

/** A configuration problem, already worded as the single line the user sees. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

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
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0];
    throw new ConfigError(`${file}:${line ? `${line.line}:${line.col}` : ''} invalid YAML: ${first.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS() ?? {};
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
    else out += out === '' ? String(key) : `.${String(key)}`;
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

export function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string {
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
    return `${where}: expected ${issue.expected}, got ${JSON.stringify(actual)?.slice(0, 60)}`;
  }
  const got = actual === undefined ? '' : `, got ${JSON.stringify(actual)?.slice(0, 60)}`;
  return `${where}: ${issue.message}${got}`;
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}
