import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { deepFreeze } from '../config/load.ts';
import type { SandboxEngine, SandboxLoader } from '../sandbox/quickjs-sandbox.ts';
import { stripTypes } from '../sandbox/typescript.ts';
import type { FilterDocument } from './kinds/filter.ts';
import { MAX_FILTER_SOURCE } from './kinds/filter.ts';
import type { ParsedDocuments } from './parse-documents.ts';
import { documentDigest } from './snapshot.ts';
import type { PolicyDocument, PolicyError } from './types.ts';
import type { ValidDocument } from './validate.ts';

/*
 * The part of a Filter document's validation the schema cannot do: reading
 * `sourceFile` from the policy folder, and compiling the source in the
 * sandbox (types stripped, module evaluated, its function found). Run by the
 * policy server and `meshgate policy check` after the schema, and by a
 * sidecar before it accepts a snapshot (it NACKs a source that fails here).
 * Asynchronous because the engine loads and instantiates asynchronously.
 */

/** Why a Filter document's source is refused: the field and `line L, column C: message`. */
export interface FilterSourceProblem {
  readonly field: 'spec.source' | 'spec.sourceFile';
  readonly reason: string;
}

export function isFilterDocument(doc: PolicyDocument): doc is PolicyDocument & FilterDocument {
  return doc.kind === 'Filter';
}

/** The fields of the call view a check gets (src/filters/user-filter/call-view.ts builds it; types/meshgate-filter.d.ts publishes it). */
const CALL_VIEW_FIELDS: readonly string[] = Object.freeze(['method', 'path', 'query', 'headers', 'source', 'destination', 'auth', 'route']);

/** What the sandbox gets for a Filter document: its name, source, config and budget. */
export function programSpecOf(doc: FilterDocument) {
  return {
    name: `${doc.metadata.namespace}/${doc.metadata.name}.ts`,
    source: doc.spec.source ?? '',
    configJson: JSON.stringify(doc.spec.config),
    fields: CALL_VIEW_FIELDS,
    budget: { cpuMs: doc.spec.budget.cpuMs, memoryBytes: doc.spec.budget.memoryMiB * 1024 * 1024 },
  };
}

/**
 * A Filter document's source as JavaScript, its types stripped: what the
 * policy server sends with the document (PolicyDocument.javascript), so a
 * sidecar does not strip types itself. Node's type stripper compiles SWC's
 * WebAssembly the first time it runs, ~130 ms of CPU and ~19 MB of RSS in
 * every sidecar with a Filter document; the policy server runs it anyway to
 * check the source. Undefined for other kinds and for a source that does not
 * strip (such a document is refused).
 */
export function filterJavaScript(document: PolicyDocument): string | undefined {
  if (!isFilterDocument(document) || document.spec.source === undefined) return undefined;
  const stripped = stripTypes(document.spec.source);
  return stripped.ok ? stripped.js : undefined;
}

/** Compiles a Filter document's source once to see that it can run; the program is thrown away. */
export async function checkFilterSource(doc: FilterDocument, engine: SandboxEngine): Promise<FilterSourceProblem | undefined> {
  return checkFilterSourceWith(doc, async (spec) => {
    const compiled = await engine.compile(spec);
    if (compiled.ok) {
      compiled.program.dispose();
      return undefined;
    }
    const { line, column, message } = compiled.problem;
    return `line ${line}, column ${column}: ${message}`;
  });
}

/** The same check with another compiler: `compile` says why the program does not compile (`line L, column C: message`), or undefined. */
export async function checkFilterSourceWith(doc: FilterDocument, compile: (spec: ReturnType<typeof programSpecOf>) => Promise<string | undefined>): Promise<FilterSourceProblem | undefined> {
  if (doc.spec.source === undefined) return { field: 'spec.sourceFile', reason: `${doc.spec.sourceFile}: not read: only the policy server reads source files; a sidecar needs the source inline` };
  const problem = await compile(programSpecOf(doc));
  if (problem === undefined) return undefined;
  return doc.spec.sourceFile === undefined ? { field: 'spec.source', reason: problem } : { field: 'spec.sourceFile', reason: `${doc.spec.sourceFile}: ${problem}` };
}

/**
 * What identifies one version of a source file (the policy server reads a
 * Filter document again when it changes): mtime, ctime, size and inode, as the
 * policy server stamps its YAML files; `missing:CODE` when it cannot be read.
 * Taken before the read, so a write that races the read is seen as a change
 * on the next scan, never lost.
 */
export async function sourceFileStamp(folder: string, rel: string): Promise<string> {
  try {
    const info = await stat(path.resolve(folder, rel));
    return `${info.mtimeMs}:${info.ctimeMs}:${info.size}:${info.ino}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

/** `rel` under `folder`, refusing a path (or a symlink) that leads out of it. */
async function readSourceFile(folder: string, rel: string): Promise<{ ok: true; text: string } | { ok: false; reason: string }> {
  try {
    const root = await realpath(folder);
    const full = await realpath(path.resolve(root, rel));
    if (!full.startsWith(root + path.sep)) return { ok: false, reason: `${rel}: leads out of the policy folder` };
    const info = await stat(full);
    if (!info.isFile()) return { ok: false, reason: `${rel}: not a file` };
    if (info.size > MAX_FILTER_SOURCE * 4) return { ok: false, reason: `${rel}: too large (at most ${MAX_FILTER_SOURCE} characters)` };
    const text = await readFile(full, 'utf8');
    if (text.length > MAX_FILTER_SOURCE) return { ok: false, reason: `${rel}: too large (at most ${MAX_FILTER_SOURCE} characters)` };
    return { ok: true, text };
  } catch (err) {
    return { ok: false, reason: `${rel}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
  }
}

export interface FilterSourceOptions {
  readonly sandbox: SandboxLoader;
  /** The policy folder `sourceFile` is relative to; without it a document naming a file is refused. */
  readonly folder?: string | undefined;
}

/**
 * Parsed documents -> the same, with each Filter's `sourceFile` read into
 * `source` (digest recomputed) and each Filter whose source does not compile
 * moved to the errors. Loads the sandbox only when there is a Filter.
 */
export async function checkFilterDocuments(parsed: ParsedDocuments, opts: FilterSourceOptions): Promise<ParsedDocuments> {
  if (!parsed.documents.some((d) => isFilterDocument(d.document))) return parsed;
  const engine = await opts.sandbox.load();
  const documents: ValidDocument[] = [];
  const errors: PolicyError[] = [...parsed.errors];
  const sourceFiles = new Map<string, string>();
  for (const valid of parsed.documents) {
    const doc = valid.document;
    if (!isFilterDocument(doc)) {
      documents.push(valid);
      continue;
    }
    const refuse = (field: string, reason: string) => errors.push({ source: valid.source, document: valid.key, field, reason });
    let resolved: FilterDocument = doc;
    if (doc.spec.source === undefined && doc.spec.sourceFile !== undefined) {
      if (opts.folder === undefined) {
        refuse('spec.sourceFile', `${doc.spec.sourceFile}: only documents of the policy folder may name a source file`);
        continue;
      }
      sourceFiles.set(doc.spec.sourceFile, await sourceFileStamp(opts.folder, doc.spec.sourceFile));
      const read = await readSourceFile(opts.folder, doc.spec.sourceFile);
      if (!read.ok) {
        refuse('spec.sourceFile', read.reason);
        continue;
      }
      resolved = deepFreeze({ ...doc, spec: { ...doc.spec, source: read.text } });
    }
    const problem = await checkFilterSource(resolved, engine);
    if (problem) {
      refuse(problem.field, problem.reason);
      continue;
    }
    documents.push(resolved === doc ? valid : { ...valid, document: resolved as PolicyDocument, digest: documentDigest(resolved as PolicyDocument) });
  }
  return sourceFiles.size > 0 ? { documents, errors, sourceFiles } : { documents, errors };
}
