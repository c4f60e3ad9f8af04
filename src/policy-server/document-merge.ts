import { TOP_LEVEL_FIELD } from '../policy/policy-error.ts';
import type { DocumentKey, PolicyDocument, PolicyError } from '../policy/types.ts';
import type { StoredDocument } from './contracts.ts';

/** One file's documents after validation: the valid ones with their index and digest, and the errors of the others. */
export interface ParsedFile {
  readonly documents: ReadonlyArray<{ readonly index: number; readonly document: PolicyDocument; readonly digest: string }>;
  readonly errors: readonly PolicyError[];
  /** Other files its documents read (a Filter's sourceFile) -> their stamp then: a change of one means the file is read again. */
  readonly sourceFiles?: ReadonlyMap<string, string>;
}

/** A document as served, with its place in its file. */
export type ServedDocument = StoredDocument & { readonly index: number };

/** What the merge needs of one file of the folder. */
export interface FileView {
  /** Modification time: among copies of a document none of which serves yet, the oldest file's wins. */
  readonly mtimeMs: number;
  readonly parsed: ParsedFile;
  /** The valid documents of the file by key (the first copy, when a file holds one twice). */
  readonly stored: ReadonlyMap<DocumentKey, ServedDocument>;
}

export interface MergeResult {
  readonly served: Map<DocumentKey, ServedDocument>;
  /** Every error of the folder, sorted by file, document, field. */
  readonly errors: PolicyError[];
  /** Keys served from their last valid copy because their file is not whole or the document is invalid now. */
  readonly stale: DocumentKey[];
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

interface Candidate {
  readonly doc: ServedDocument;
  readonly mtimeMs: number;
  /** The last valid copy, kept because its file or the document itself is broken now. */
  readonly stale: boolean;
}

/**
 * Which copy of each document serves, from the files of the folder and what
 * served until now (`previous`). Never fails open:
 *
 * - A file that is not whole keeps everything it served: one with an error no
 *   document can be named for (YAML that does not parse, a file that cannot be
 *   read, too large), or one with no document at all that served some (a file
 *   truncated to be rewritten in place). Its documents leave when it is whole
 *   again without them, or when it is deleted.
 * - A document that turns invalid keeps its last valid copy (the error is reported).
 * - A document in several files: the copy serving now keeps serving wherever
 *   the other copies sort, and every other copy is the error, named by its own
 *   file. Only when no copy serves (the first load, or the serving copy was
 *   removed) does one start serving: the one in the least recently modified file,
 *   then the first in path order, so a copy added later does not take over
 *   on a restart either.
 */
export function mergeFiles(files: ReadonlyMap<string, FileView>, previous: ReadonlyMap<DocumentKey, ServedDocument>): MergeResult {
  const paths = [...files.keys()].sort(cmp);
  const errors: PolicyError[] = [];
  const servedBefore = new Map<string, number>();
  for (const d of previous.values()) servedBefore.set(d.file, (servedBefore.get(d.file) ?? 0) + 1);

  const notWhole = new Set<string>();
  for (const rel of paths) {
    const { parsed } = files.get(rel)!;
    errors.push(...parsed.errors);
    if (parsed.errors.some((e) => e.document === undefined)) notWhole.add(rel);
    else if (parsed.documents.length === 0 && parsed.errors.length === 0 && servedBefore.has(rel)) {
      notWhole.add(rel);
      errors.push({
        source: { file: rel, index: 0 },
        document: undefined,
        field: TOP_LEVEL_FIELD,
        reason: `file has no document (empty, or being rewritten); the ${servedBefore.get(rel)} document(s) it served stay in service until it is written whole again or deleted`,
      });
    }
  }
  const erroredKeys = new Set(errors.filter((e) => e.document !== undefined).map((e) => `${e.source.file}\n${e.document}`));

  const candidates = new Map<DocumentKey, Candidate[]>();
  const add = (key: DocumentKey, c: Candidate): void => {
    const list = candidates.get(key);
    if (list) list.push(c);
    else candidates.set(key, [c]);
  };
  for (const rel of paths) {
    const state = files.get(rel)!;
    for (const doc of [...state.stored.values()].sort((a, b) => a.index - b.index)) add(doc.key, { doc, mtimeMs: state.mtimeMs, stale: false });
  }
  for (const [key, prev] of previous) {
    const state = files.get(prev.file);
    // Deleted: its documents leave. A fresh copy in the same file: that one is the candidate.
    if (!state || state.stored.has(key)) continue;
    if (notWhole.has(prev.file) || erroredKeys.has(`${prev.file}\n${key}`)) add(key, { doc: prev, mtimeMs: state.mtimeMs, stale: true });
  }

  const served = new Map<DocumentKey, ServedDocument>();
  const stale: DocumentKey[] = [];
  for (const [key, list] of candidates) {
    const incumbent = previous.get(key);
    const winner = (incumbent && list.find((c) => c.doc.file === incumbent.file)) ?? [...list].sort((a, b) => a.mtimeMs - b.mtimeMs || cmp(a.doc.file, b.doc.file) || a.doc.index - b.doc.index)[0]!;
    served.set(key, winner.doc);
    if (winner.stale) stale.push(key);
    for (const other of list) {
      if (other === winner) continue;
      errors.push({
        source: { file: other.doc.file, index: other.doc.index },
        document: key,
        field: 'metadata.name',
        reason: `duplicate: ${key} is already served from ${winner.doc.file} (document ${winner.doc.index}); this copy is ignored`,
      });
    }
  }
  errors.sort((a, b) => cmp(a.source.file, b.source.file) || a.source.index - b.source.index || cmp(a.field, b.field));
  return { served, errors, stale: stale.sort(cmp) };
}
