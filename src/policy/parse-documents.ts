import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { TOP_LEVEL_FIELD, YAML_FIELD } from './policy-error.ts';
import { createPolicyValidator } from './validate.ts';
import type { PolicyValidator, ValidDocument } from './validate.ts';
import type { PolicyLimits } from './limits.ts';
import type { DocumentKey, DocumentSource, PolicyError } from './types.ts';

/*
 * Policy text -> validated documents. One bad document is rejected alone and
 * every other document applies: a YAML syntax error, a schema error, a limit,
 * or a second document with a key already taken only costs that document.
 *
 * Order is part of the contract: files are read in sorted path order and the
 * documents of a file in their order, so "the later copy of a duplicate is
 * rejected" means the same document on every replica.
 */

export interface ParseOptions {
  /** Reuse one validator (its schemas and regex verdicts) across calls. */
  readonly validator?: PolicyValidator;
  /** Limits for a validator made for this call (ignored when `validator` is given). */
  readonly limits?: Partial<PolicyLimits>;
}

export interface ParsedDocuments {
  readonly documents: readonly ValidDocument[];
  readonly errors: readonly PolicyError[];
}

export interface PolicyFileText {
  /** The name used in errors and in ValidDocument.source.file. */
  readonly file: string;
  readonly text: string;
}

function validatorOf(options: ParseOptions): PolicyValidator {
  return options.validator ?? createPolicyValidator(options.limits === undefined ? {} : { limits: options.limits });
}

/** Where each key was first seen, across the files of one parse. */
type SeenKeys = Map<DocumentKey, DocumentSource>;

function parseText(text: string, file: string, validator: PolicyValidator, seen: SeenKeys, out: { documents: ValidDocument[]; errors: PolicyError[] }): void {
  const limits = validator.limits;
  const fileBytes = Buffer.byteLength(text);
  if (fileBytes > limits.maxFileBytes) {
    out.errors.push({ source: { file, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `file too large: at most ${limits.maxFileBytes} bytes (got ${fileBytes}); no document of it applies` });
    return;
  }
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true });
  Array.from(docs).forEach((doc, index) => {
    const source: DocumentSource = { file, index };
    const reject = (field: string, reason: string, document?: DocumentKey) => out.errors.push({ source, document, field, reason });
    if (doc.errors.length > 0) {
      const first = doc.errors[0]!;
      const { line, col } = lineCounter.linePos(first.pos[0]);
      reject(YAML_FIELD, `line ${line}, column ${col}: ${first.message.split('\n')[0]}`);
      return;
    }
    const [start, , end] = doc.range;
    const bytes = Buffer.byteLength(text.slice(start, end));
    if (bytes > limits.maxDocumentBytes) {
      reject(TOP_LEVEL_FIELD, `document too large: at most ${limits.maxDocumentBytes} bytes (got ${bytes})`);
      return;
    }
    let raw: unknown;
    try {
      raw = doc.toJS({ maxAliasCount: limits.maxAliasCount });
    } catch (err) {
      reject(YAML_FIELD, `${(err as Error).message.split('\n')[0]} (at most ${limits.maxAliasCount} alias expansions)`);
      return;
    }
    // A document of only comments, or the empty one after a trailing `---`.
    if (raw === null || raw === undefined) return;
    const result = validator.validate(raw, source);
    if (!result.ok) {
      out.errors.push(...result.errors);
      return;
    }
    const first = seen.get(result.document.key);
    if (first) {
      const where = first.file === file ? `document ${first.index} of this file` : `${first.file} (document ${first.index})`;
      reject('metadata.name', `duplicate: ${result.document.key} is already defined in ${where}; this copy is ignored`, result.document.key);
      return;
    }
    seen.set(result.document.key, source);
    out.documents.push(result.document);
  });
}

/** One YAML (or JSON) text, possibly several `---` documents. */
export function parsePolicyText(text: string, file: string, options: ParseOptions = {}): ParsedDocuments {
  const out = { documents: [] as ValidDocument[], errors: [] as PolicyError[] };
  parseText(text, file, validatorOf(options), new Map(), out);
  return out;
}

function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Several files, parsed in sorted `file` order; a key defined twice keeps its first copy. */
export function parsePolicyFiles(files: readonly PolicyFileText[], options: ParseOptions = {}): ParsedDocuments {
  const validator = validatorOf(options);
  const seen: SeenKeys = new Map();
  const out = { documents: [] as ValidDocument[], errors: [] as PolicyError[] };
  for (const { file, text } of [...files].sort((a, b) => comparePaths(a.file, b.file))) parseText(text, file, validator, seen, out);
  return out;
}

const POLICY_FILE_RE = /\.ya?ml$/i;

/**
 * The policy files under `dir`, as sorted paths relative to it (`/`-separated).
 * Entries whose name starts with `.` are skipped: editors' swap files, and the
 * `..data` / `..2026_01_01...` folders of a Kubernetes ConfigMap mount, which
 * would otherwise give every document twice. Symlinks to files are followed
 * (a ConfigMap's files are symlinks); symlinks to folders are not.
 */
export async function listPolicyFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(path.join(dir, rel), { withFileTypes: true });
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) await walk(child);
      else if (POLICY_FILE_RE.test(entry.name) && (entry.isFile() || (entry.isSymbolicLink() && (await stat(path.join(dir, child)).then((s) => s.isFile(), () => false))))) {
        found.push(child);
      }
    }
  };
  await walk('');
  return found.sort(comparePaths);
}

export interface FolderParseOptions extends ParseOptions {
  /** Name files relative to `dir` (as the policy server stores them) instead of `dir/relative`. */
  readonly relativePaths?: boolean;
}

/**
 * Every *.yaml / *.yml under `dir`, recursively, in sorted path order. A file
 * that cannot be read (or is over maxFileBytes) is one error; the rest apply.
 * Throws only when `dir` itself cannot be listed.
 */
export async function parsePolicyFolder(dir: string, options: FolderParseOptions = {}): Promise<ParsedDocuments> {
  const validator = validatorOf(options);
  const files = await listPolicyFiles(dir);
  const texts: PolicyFileText[] = [];
  const errors: PolicyError[] = [];
  for (const rel of files) {
    const file = options.relativePaths ? rel : path.join(dir, rel);
    const full = path.join(dir, rel);
    try {
      const size = (await stat(full)).size;
      if (size > validator.limits.maxFileBytes) {
        errors.push({ source: { file, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `file too large: at most ${validator.limits.maxFileBytes} bytes (got ${size}); no document of it applies` });
        continue;
      }
      texts.push({ file, text: await readFile(full, 'utf8') });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      errors.push({ source: { file, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `cannot read file (${code ?? String(err)})` });
    }
  }
  const parsed = parsePolicyFiles(texts, { validator });
  // Read errors sort with the parse errors by file, as they would have appeared in order.
  const all = [...errors, ...parsed.errors].sort((a, b) => comparePaths(a.source.file, b.source.file) || a.source.index - b.source.index);
  return { documents: parsed.documents, errors: all };
}
