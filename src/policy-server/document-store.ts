import { watch } from 'node:fs';
import type { FSWatcher, Stats } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { DocumentKey, PolicyDocument, PolicyError } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { DocumentStore, StoredDocument, StoreWriteResult } from './contracts.ts';
import type { PolicyServerMetrics } from './policy-server-metrics.ts';

/** One file's documents after validation: the valid ones with their index and digest, and the errors of the others. */
export interface ParsedFile {
  readonly documents: ReadonlyArray<{ readonly index: number; readonly document: PolicyDocument; readonly digest: string }>;
  readonly errors: readonly PolicyError[];
}

/** What the store needs from the policy model (src/policy). */
export interface PolicyModel {
  /** Parses and validates one file's text; `file` is how errors name the source: a path relative to the folder, or `api`. */
  parseFile(text: string, file: string): ParsedFile | Promise<ParsedFile>;
  /** Files larger than this are rejected whole without being read. */
  readonly maxFileBytes: number;
}

export interface DocumentStoreOptions {
  readonly folder: string;
  /** File events within this window cause one rescan. */
  readonly debounceMs: number;
  /** Full stat-only rescan period in case file events are missed; 0: events only. */
  readonly pollMs: number;
}

export interface FolderDocumentStore extends DocumentStore {
  /** Reads the folder now (the first call is the initial load). Resolves when the state is current. */
  rescan(): Promise<void>;
  /** False until the first scan has completed. */
  loaded(): boolean;
  /** Documents served from their last valid copy because their file is invalid now. */
  stale(): readonly DocumentKey[];
  /** Starts file events and the periodic rescan (openDocumentStore does, after the first load). */
  watch(): void;
}

interface FileState {
  /** mtime, ctime, size and inode: a change of any means the file is read again. */
  readonly stamp: string;
  readonly parsed: ParsedFile;
  /** Stored documents of this file by key (the valid ones). */
  readonly stored: ReadonlyMap<DocumentKey, StoredDocument & { readonly index: number }>;
}

// As `meshgate policy check DIR` (src/policy/parse-documents.ts): the same files, so the same verdicts.
const POLICY_FILE = /\.ya?ml$/i;
const TOP_LEVEL_FIELD = '(top level)';

const keyOf = (d: PolicyDocument): DocumentKey => `${d.kind}/${d.metadata.namespace}/${d.metadata.name}`;
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The policy documents of a folder, validated per document, kept current by
 * file events (fs.watch, recursive) with a periodic stat-only rescan behind
 * them, and written to by the admin API through the same folder, so replicas
 * watching one folder converge on the same documents.
 *
 * Invariants:
 * - A document that fails validation is rejected alone: the other documents
 *   of its file and of the folder apply.
 * - A document that was valid and turns invalid (or whose file stops parsing)
 *   keeps its last valid copy in service until it is fixed or its file is
 *   deleted; the error is reported all the same. A replica started while the
 *   document is invalid has no earlier copy to keep, so replicas agree again
 *   once the document is fixed.
 * - The same key in two files: the file first in path order wins, the other
 *   copy is an error.
 * - A folder that cannot be read at all keeps the current state (a transient
 *   mount problem must not withdraw every policy); it is logged and counted.
 */
export function createDocumentStore(
  opts: DocumentStoreOptions,
  model: PolicyModel,
  deps: { logger: Logger; metrics: PolicyServerMetrics },
): FolderDocumentStore {
  const log = deps.logger.child({ component: 'document-store' });
  const files = new Map<string, FileState>();
  let served = new Map<DocumentKey, StoredDocument>();
  let staleKeys: DocumentKey[] = [];
  let currentErrors: PolicyError[] = [];
  const loggedErrors = new Set<string>();
  const listeners: Array<() => void> = [];
  let isLoaded = false;
  let closed = false;
  let watcher: FSWatcher | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  let debounceTimer: NodeJS.Timeout | undefined;
  let scanning: Promise<void> | undefined;
  let scanAgain = false;
  let writes: Promise<unknown> = Promise.resolve();
  let folderFailing = false;

  const relative = (abs: string): string => path.relative(opts.folder, abs).split(path.sep).join('/');

  async function listFiles(): Promise<Map<string, Stats>> {
    const out = new Map<string, Stats>();
    const entries = await readdir(opts.folder, { recursive: true, withFileTypes: true });
    for (const entry of entries) {
      const abs = path.join(entry.parentPath, entry.name);
      const rel = relative(abs);
      // Dot names: our temporary files, the shared registry, editors' swap files, Kubernetes' ..data.
      if (rel.split('/').some((segment) => segment.startsWith('.')) || !POLICY_FILE.test(entry.name)) continue;
      if (!entry.isFile() && !entry.isSymbolicLink()) continue;
      try {
        // stat follows symlinks: a ConfigMap mount is a folder of links into ..data.
        const st = await stat(abs);
        if (st.isFile()) out.set(rel, st);
      } catch {
        // Gone between readdir and stat.
      }
    }
    return out;
  }

  async function loadFile(rel: string, st: Stats): Promise<FileState> {
    const stamp = `${st.mtimeMs}:${st.ctimeMs}:${st.size}:${st.ino}`;
    const known = files.get(rel);
    if (known && known.stamp === stamp) return known;
    let parsed: ParsedFile;
    if (st.size > model.maxFileBytes) {
      parsed = {
        documents: [],
        errors: [{ source: { file: rel, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `file too large: at most ${model.maxFileBytes} bytes (got ${st.size}); no document of it applies` }],
      };
    } else {
      let text: string;
      try {
        text = await readFile(path.join(opts.folder, rel), 'utf8');
      } catch (err) {
        parsed = { documents: [], errors: [{ source: { file: rel, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})` }] };
        return { stamp: '', parsed, stored: new Map() };
      }
      parsed = await model.parseFile(text, rel);
    }
    const stored = new Map<DocumentKey, StoredDocument & { index: number }>();
    for (const { index, document, digest } of parsed.documents) {
      const key = keyOf(document);
      if (!stored.has(key)) stored.set(key, { key, document, digest, file: rel, index });
    }
    return { stamp, parsed, stored };
  }

  /** Rebuilds the served set from the per-file states; true when documents or errors changed. */
  function rebuild(): boolean {
    const next = new Map<DocumentKey, StoredDocument>();
    const firstSeen = new Map<DocumentKey, { file: string; index: number }>();
    const errors: PolicyError[] = [];
    const stale: DocumentKey[] = [];
    const paths = [...files.keys()].sort(cmp);
    for (const rel of paths) {
      const state = files.get(rel)!;
      errors.push(...state.parsed.errors);
      for (const doc of [...state.stored.values()].sort((a, b) => a.index - b.index)) {
        const first = firstSeen.get(doc.key);
        if (first) {
          // Worded as parsePolicyFolder words it, so `meshgate policy check` and the server agree.
          errors.push({ source: { file: rel, index: doc.index }, document: doc.key, field: 'metadata.name', reason: `duplicate: ${doc.key} is already defined in ${first.file} (document ${first.index}); this copy is ignored` });
          continue;
        }
        firstSeen.set(doc.key, doc);
        next.set(doc.key, { key: doc.key, document: doc.document, digest: doc.digest, file: doc.file });
      }
    }
    // Last valid copies: a document now in error (or in a file that no longer parses) stays served as it was.
    const fileLevelErrors = new Set(errors.filter((e) => e.document === undefined).map((e) => e.source.file));
    const erroredKeys = new Set(errors.filter((e) => e.document !== undefined).map((e) => `${e.source.file}\n${e.document}`));
    for (const [key, previous] of served) {
      if (next.has(key) || !files.has(previous.file)) continue;
      if (fileLevelErrors.has(previous.file) || erroredKeys.has(`${previous.file}\n${key}`)) {
        next.set(key, previous);
        stale.push(key);
      }
    }
    errors.sort((a, b) => cmp(a.source.file, b.source.file) || a.source.index - b.source.index || cmp(a.field, b.field));

    const fingerprint = (docs: Map<DocumentKey, StoredDocument>, errs: PolicyError[]): string =>
      JSON.stringify([[...docs.values()].map((d) => [d.key, d.digest, d.file]).sort(), errs]);
    const changed = fingerprint(next, errors) !== fingerprint(served, currentErrors);
    served = next;
    currentErrors = errors;
    staleKeys = stale.sort(cmp);
    report();
    return changed;
  }

  function report(): void {
    const invalidDocuments = new Set(currentErrors.map((e) => `${e.source.file}\n${e.source.index}`));
    deps.metrics.documents.set({ state: 'valid' }, served.size);
    deps.metrics.documents.set({ state: 'invalid' }, invalidDocuments.size);
    const now = new Set<string>();
    for (const e of currentErrors) {
      const line = `${e.source.file}: document ${e.source.index}${e.document ? ` (${e.document})` : ''}: ${e.field ? `${e.field}: ` : ''}${e.reason}`;
      now.add(line);
      if (loggedErrors.has(line)) continue;
      loggedErrors.add(line);
      const keptPrevious = e.document !== undefined && staleKeys.includes(e.document);
      log.warn({ file: e.source.file, document: e.source.index, key: e.document ?? null, field: e.field, reason: e.reason, keptPrevious }, `policy document rejected: ${line}`);
    }
    // Forget fixed errors, so one that comes back is logged again.
    for (const line of loggedErrors) if (!now.has(line)) loggedErrors.delete(line);
  }

  async function scanOnce(): Promise<void> {
    let listing: Map<string, Stats>;
    try {
      listing = await listFiles();
    } catch (err) {
      deps.metrics.folderErrors.inc();
      if (!folderFailing) log.error({ folder: opts.folder, err: (err as Error).message }, 'cannot read the policy folder; keeping the current documents');
      folderFailing = true;
      return;
    }
    if (folderFailing) log.info({ folder: opts.folder }, 'policy folder readable again');
    folderFailing = false;
    for (const rel of [...files.keys()]) if (!listing.has(rel)) files.delete(rel);
    for (const [rel, st] of listing) files.set(rel, await loadFile(rel, st));
    const changed = rebuild();
    const first = !isLoaded;
    isLoaded = true;
    if (first) log.info({ folder: opts.folder, documents: served.size, invalid: currentErrors.length }, 'policy folder loaded');
    if (changed && !first && !closed) notify();
  }

  function notify(): void {
    for (const listener of listeners) {
      try {
        listener();
      } catch (err) {
        log.error({ err: (err as Error).message }, 'document store listener failed');
      }
    }
  }

  // One scan at a time; requests during a scan cause exactly one more, so the last event is never lost.
  function rescan(): Promise<void> {
    if (scanning) {
      scanAgain = true;
      return scanning;
    }
    scanning = (async () => {
      do {
        scanAgain = false;
        await scanOnce();
      } while (scanAgain && !closed);
    })().finally(() => {
      scanning = undefined;
    });
    return scanning;
  }

  function scheduleRescan(): void {
    if (closed || debounceTimer) return;
    debounceTimer = setTimeout(() => {
      debounceTimer = undefined;
      void rescan();
    }, opts.debounceMs);
  }

  function startWatching(): void {
    try {
      watcher = watch(opts.folder, { recursive: true, persistent: false }, () => scheduleRescan());
      watcher.on('error', (err) => {
        log.warn({ err: err.message, pollMs: opts.pollMs }, 'policy folder watch failed; relying on the periodic rescan');
        watcher?.close();
        watcher = undefined;
      });
    } catch (err) {
      log.warn({ err: (err as Error).message, pollMs: opts.pollMs }, 'cannot watch the policy folder; relying on the periodic rescan');
    }
    if (opts.pollMs > 0) {
      pollTimer = setInterval(() => void rescan(), opts.pollMs);
      pollTimer.unref();
    }
  }

  function serialised<T>(task: () => Promise<T>): Promise<T> {
    const run = writes.then(task);
    writes = run.catch(() => undefined);
    return run;
  }

  /** The file holding `key` now, served or in error, with how many documents it has. */
  function locate(key: DocumentKey): { file: string; index: number; documents: number } | undefined {
    const count = (rel: string): number => {
      const p = files.get(rel)?.parsed;
      if (!p) return 0;
      return new Set([...p.documents.map((d) => d.index), ...p.errors.map((e) => e.source.index)]).size;
    };
    for (const [rel, state] of [...files].sort(([a], [b]) => cmp(a, b))) {
      const doc = state.stored.get(key);
      if (doc) return { file: rel, index: doc.index, documents: count(rel) };
    }
    for (const e of currentErrors) if (e.document === key && files.has(e.source.file)) return { file: e.source.file, index: e.source.index, documents: count(e.source.file) };
    return undefined;
  }

  /** Replaces (or with `text` undefined, drops) document `index` of a multi-document file, keeping the others as written. */
  async function rewriteMultiDocument(rel: string, index: number, text: string | undefined): Promise<void> {
    const abs = path.join(opts.folder, rel);
    const docs = parseAllDocuments(await readFile(abs, 'utf8'));
    const parts = (Array.isArray(docs) ? docs : [docs]).map((d, i) => (i === index ? text : String(d).replace(/\n*$/, '\n')));
    await writeFileAtomic(abs, parts.filter((p): p is string => p !== undefined).map((p) => p.replace(/^---\s*\n/, '')).join('---\n'));
  }

  return {
    documents: () => [...served.values()],
    errors: () => currentErrors,
    stale: () => staleKeys,
    loaded: () => isLoaded,
    rescan,
    onChange: (listener) => void listeners.push(listener),

    put(text) {
      return serialised(async (): Promise<StoreWriteResult> => {
        const parsed = await model.parseFile(text, 'api');
        const indexes = new Set([...parsed.documents.map((d) => d.index), ...parsed.errors.map((e) => e.source.index)]);
        if (parsed.errors.length > 0) return { ok: false, errors: parsed.errors };
        if (indexes.size !== 1 || parsed.documents.length !== 1) {
          return { ok: false, errors: [{ source: { file: 'api', index: 0 }, document: undefined, field: '', reason: `expected exactly one document, got ${indexes.size}` }] };
        }
        const document = parsed.documents[0]!.document;
        const key = keyOf(document);
        const body = text.endsWith('\n') ? text : `${text}\n`;
        const at = locate(key);
        let rel: string;
        if (at && at.documents > 1) {
          rel = at.file;
          await rewriteMultiDocument(rel, at.index, body);
        } else {
          rel = at?.file ?? `${document.metadata.namespace}/${document.kind.toLowerCase()}-${document.metadata.name}.yaml`;
          await writeFileAtomic(path.join(opts.folder, ...rel.split('/')), body);
        }
        // The caller reads its own write: the state is current before the promise resolves.
        await rescan();
        return { ok: true, key, digest: parsed.documents[0]!.digest, file: rel };
      });
    },

    remove(key) {
      return serialised(async () => {
        const at = locate(key);
        if (!at) return false;
        if (at.documents > 1) await rewriteMultiDocument(at.file, at.index, undefined);
        else await rm(path.join(opts.folder, ...at.file.split('/')), { force: true });
        await rescan();
        return true;
      });
    },

    async close() {
      closed = true;
      clearTimeout(debounceTimer);
      clearInterval(pollTimer);
      watcher?.close();
      await scanning;
      await writes;
    },
    watch: startWatching,
  };
}

/** Creates the folder if needed, loads it once, then watches it. */
export async function openDocumentStore(
  opts: DocumentStoreOptions,
  model: PolicyModel,
  deps: { logger: Logger; metrics: PolicyServerMetrics },
): Promise<FolderDocumentStore> {
  await mkdir(opts.folder, { recursive: true });
  const store = createDocumentStore(opts, model, deps);
  await store.rescan();
  store.watch();
  return store;
}
