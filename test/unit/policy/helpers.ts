import type { ParseOptions } from '../../../src/policy/parse-documents.ts';
import { parsePolicyText } from '../../../src/policy/parse-documents.ts';
import { formatPolicyError } from '../../../src/policy/policy-error.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';

/** `apiVersion` + `kind` + `metadata` around a spec written as YAML (indented by the caller or flow style). */
export function doc(kind: string, spec: string, meta = '{ name: p1, namespace: shop }'): string {
  return `apiVersion: meshgate.dev/v1\nkind: ${kind}\nmetadata: ${meta}\nspec:\n${spec.replace(/^/gm, '  ')}\n`;
}

/** Formatted error lines of one text, as `policy check` prints them. */
export function errorLines(text: string, options: ParseOptions = {}): string[] {
  return parsePolicyText(text, 'p.yaml', options).errors.map(formatPolicyError);
}

/** The one valid document of a text; throws with the error lines otherwise. */
export function validDocument(text: string, options: ParseOptions = {}): PolicyDocument {
  const result = parsePolicyText(text, 'p.yaml', options);
  if (result.errors.length > 0 || result.documents.length !== 1) {
    throw new Error(`expected one valid document, got:\n${result.errors.map(formatPolicyError).join('\n')}`);
  }
  return result.documents[0]!.document;
}
