import { createTwoFilesPatch } from 'diff';
import { stringify } from 'yaml';

/** How a document is shown in diffs and written back: block YAML, keys in the author's order. */
export function documentYaml(document: unknown): string {
  return stringify(document, { lineWidth: 0, aliasDuplicateObjects: false });
}

/**
 * Unified diff of a document's YAML, before -> after, as the audit log keeps
 * it. An absent side is `/dev/null` (creation, deletion), like git. No change
 * gives an empty string.
 */
export function documentDiff(key: string, before: string | undefined, after: string | undefined): string {
  if ((before ?? '') === (after ?? '')) return '';
  return createTwoFilesPatch(before === undefined ? '/dev/null' : `a/${key}`, after === undefined ? '/dev/null' : `b/${key}`, before ?? '', after ?? '', undefined, undefined, {
    context: 3,
    headerOptions: { includeIndex: false, includeUnderline: false, includeFileHeaders: true },
  });
}
