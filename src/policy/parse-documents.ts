import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { readTextFile } from '../config/text-file.ts';
import { parseYaml } from '../config/yaml-bounded.ts';
import type { PolicyLimits } from './limits.ts';
import { formatFieldPath, TOP_LEVEL_FIELD, YAML_FIELD } from './policy-error.ts';
import type { DocumentKey, DocumentSource, PolicyError } from './types.ts';
import type { PolicyValidator, ValidDocument } from './validate.ts';
import { createPolicyValidator } from './validate.ts';

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
  /** Files the documents read besides their own (a Filter's sourceFile), relative to the policy folder -> their stamp when read. */
  readonly sourceFiles?: ReadonlyMap<string, string>;
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
    out.errors.push({
      source: { file, index: 0 },
      document: undefined,
      field: TOP_LEVEL_FIELD,
      reason: `file too large: at most ${limits.maxFileBytes} bytes (got ${fileBytes}); no document of it applies`,
    });
    return;
  }
  const parsed = parseYaml(
    text,
    { maxNodes: limits.maxNodesPerFile, maxDocuments: limits.maxDocumentsPerFile, maxKeysPerMapping: limits.maxKeysPerMapping, maxAliasCount: limits.maxAliasCount },
    { strict: true, maxProblems: limits.maxErrorsPerDocument },
  );
  if (!parsed.ok) {
    out.errors.push({ source: { file, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `${parsed.reason}; no document of it applies` });
    return;
  }
  for (const doc of parsed.documents) {
    const source: DocumentSource = { file, index: doc.index };
    const reject = (field: string, reason: string, document?: DocumentKey) => out.errors.push({ source, document, field, reason });
    const bytes = Buffer.byteLength(text.slice(doc.start, doc.end));
    if (bytes > limits.maxDocumentBytes) {
      reject(TOP_LEVEL_FIELD, `document too large: at most ${limits.maxDocumentBytes} bytes (got ${bytes})`);
      continue;
    }
    if (doc.problems.length > 0) {
      // A syntax error often causes the next ones: the first is the one to fix.
      const problems = doc.problems[0]!.syntax ? doc.problems.slice(0, 1) : doc.problems;
      for (const p of problems) {
        const at = p.line > 0 ? `line ${p.line}, column ${p.column}: ` : '';
        reject(p.syntax || p.path.length === 0 ? YAML_FIELD : formatFieldPath(p.path), `${at}${p.reason}`);
      }
      continue;
    }
    const raw = doc.value;
    // A document of only comments, or the empty one after a trailing `---`.
    if (raw === null || raw === undefined) continue;
    const result = validator.validate(raw, source);
    if (!result.ok) {
      out.errors.push(...result.errors);
      continue;
    }
    const first = seen.get(result.document.key);
    if (first) {
      const where = first.file === file ? `document ${first.index} of this file` : `${first.file} (document ${first.index})`;
      reject('metadata.name', `duplicate: ${result.document.key} is already defined in ${where}; this copy is ignored`, result.document.key);
      continue;
    }
    seen.set(result.document.key, source);
    out.documents.push(result.document);
  }
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
      else if (
        POLICY_FILE_RE.test(entry.name) &&
        (entry.isFile() ||
          (entry.isSymbolicLink() &&
            (await stat(path.join(dir, child)).then(
              (s) => s.isFile(),
              () => false,
            ))))
      ) {
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
    const read = await readTextFile(full, validator.limits.maxFileBytes);
    if (read.ok) texts.push({ file, text: read.text });
    // Worded as the policy server's document store words it ("file too large: ...; no document of it applies").
    else
      errors.push({
        source: { file, index: 0 },
        document: undefined,
        field: TOP_LEVEL_FIELD,
        reason: read.reason.startsWith('file too large') ? `${read.reason}; no document of it applies` : read.reason,
      });
  }
  const parsed = parsePolicyFiles(texts, { validator });
  // Read errors sort with the parse errors by file, as they would have appeared in order.
  const all = [...errors, ...parsed.errors].sort((a, b) => comparePaths(a.source.file, b.source.file) || a.source.index - b.source.index);
  return { documents: parsed.documents, errors: all };
}
