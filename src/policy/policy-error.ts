import type { z } from 'zod';
import { oneLine, valueAt } from '../config/load.ts';
import type { DocumentKey, DocumentSource, PolicyError } from './types.ts';

/*
 * How a policy problem is worded, everywhere it shows (policy check, the admin
 * API, the server log, a sidecar NACK): one line,
 * `FILE: document N (kind/namespace/name): field.path: reason`, with N the
 * 0-based position of the document in its file, the key when it is known, and
 * a field path in the document's own terms (`spec.rules[2].to[0].paths[1]`).
 */

/** Field of errors about the whole document or file rather than one field. */
export const TOP_LEVEL_FIELD = '(top level)';
/** Field of YAML syntax errors: the reason starts with the line and column. */
export const YAML_FIELD = '(yaml)';

export function formatPolicyError(err: PolicyError): string {
  const key = err.document === undefined ? '' : ` (${err.document})`;
  // Values quoted from the document may hold line breaks (JSON.stringify leaves U+2028 as it is): escaped, one line.
  return oneLine(`${err.source.file}: document ${err.source.index}${key}: ${err.field}: ${err.reason}`);
}

export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (out === '') out = String(key);
    // Map keys that are not identifiers (patternProperties regexes, header names with dots) are quoted.
    else out += /^[A-Za-z_$][\w$-]*$/.test(String(key)) ? `.${String(key)}` : `[${JSON.stringify(String(key))}]`;
  }
  return out === '' ? TOP_LEVEL_FIELD : out;
}

export function documentKeyOf(kind: string, namespace: string, name: string): DocumentKey {
  return `${kind}/${namespace}/${name}`;
}

function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isPrimitive(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value);
}

/** One zod issue -> field path and reason (unknown keys give one entry per key). */
function describeIssue(issue: z.core.$ZodIssue, raw: unknown): { field: string; reason: string }[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ field: formatFieldPath([...issue.path, key]), reason: 'unknown field' }));
  }
  const field = formatFieldPath(issue.path);
  const actual = valueAt(raw, issue.path);
  const got = isPrimitive(actual) ? `, got ${shown(actual)}` : '';
  let reason: string;
  switch (issue.code) {
    case 'invalid_type':
      reason = actual === undefined ? `missing required field (expected ${issue.expected})` : `expected ${issue.expected}, got ${shown(actual)}`;
      break;
    case 'invalid_value':
      reason = issue.message.startsWith('Invalid')
        ? `expected ${issue.values.length === 1 ? String(issue.values[0]) : `one of ${issue.values.map(String).join(', ')}`}${got}`
        : `${issue.message}${issue.message.startsWith('expected') ? got : ''}`;
      break;
    case 'too_big':
    case 'too_small': {
      if (!/^Too (big|small)/.test(issue.message)) {
        reason = issue.message;
        break;
      }
      const bound = Number(issue.code === 'too_big' ? issue.maximum : issue.minimum);
      if (issue.origin === 'array' || issue.origin === 'string') {
        const length = Array.isArray(actual) || typeof actual === 'string' ? actual.length : undefined;
        const unit = issue.origin === 'array' ? 'entries' : 'characters';
        if (issue.code === 'too_small' && bound === 1) reason = 'must not be empty';
        else if (issue.code === 'too_small') reason = `too short: at least ${bound} ${unit}${length === undefined ? '' : ` (got ${length})`}`;
        else if (issue.origin === 'array') reason = `too many entries: at most ${bound}${length === undefined ? '' : ` (got ${length})`}`;
        else reason = `too long: at most ${bound} characters${length === undefined ? '' : ` (got ${length})`}`;
      } else {
        const inclusive = issue.inclusive !== false;
        reason = issue.code === 'too_big' ? `must be ${inclusive ? 'at most' : 'less than'} ${bound}${got}` : `must be ${inclusive ? 'at least' : 'more than'} ${bound}${got}`;
      }
      break;
    }
    default:
      reason = `${issue.message}${issue.message.startsWith('expected') && !issue.message.includes(' got ') ? got : ''}`;
  }
  return [{ field, reason }];
}

/**
 * Zod issues -> PolicyErrors: one per field (the first problem of a field is
 * the one worth fixing first), at most `max`, the rest counted in the last one.
 */
export function issuesToErrors(issues: readonly z.core.$ZodIssue[], raw: unknown, source: DocumentSource, document: DocumentKey | undefined, max: number): PolicyError[] {
  const byField = new Map<string, string>();
  for (const issue of issues) {
    for (const { field, reason } of describeIssue(issue, raw)) {
      if (!byField.has(field)) byField.set(field, reason);
    }
  }
  return capErrors(
    [...byField].map(([field, reason]) => ({ source, document, field, reason })),
    max,
  );
}

/** Keeps `max` errors; when more, the last kept one says how many were left out. */
export function capErrors(errors: PolicyError[], max: number): PolicyError[] {
  if (errors.length <= max) return errors;
  const kept = errors.slice(0, max);
  const last = kept[max - 1]!;
  kept[max - 1] = { ...last, reason: `${last.reason} (and ${errors.length - max} more errors in this document)` };
  return kept;
}
