import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { runBackgroundLoop } from '../core/background-loop.ts';
import { sourceFileStamp } from '../policy/filter-sources.ts';
import { TOP_LEVEL_FIELD } from '../policy/policy-error.ts';
import type { DocumentKey, PolicyDocument, PolicyError } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { DocumentStore, StoreWriteResult } from './contracts.ts';
import type { FileView, ParsedFile, ServedDocument } from './document-merge.ts';
import { mergeFiles } from './document-merge.ts';
import { createFileSettle } from './file-settle.ts';
import type { FolderListing, ListedFile } from './folder-listing.ts';
import { listPolicyFolder } from './folder-listing.ts';
import type { FolderWatch } from './folder-watch.ts';
import { createFolderWatch } from './folder-watch.ts';
import type { PolicyServerMetrics } from './policy-server-metrics.ts';

export type { ParsedFile } from './document-merge.ts';

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
  /**
   * A changed (or deleted) file is read into service only once it has stayed as
   * it is for this long, so a file rewritten in place is not served half
   * written. 0: at once. Writes of the store itself never wait.
   */
  readonly settleMs?: number;
  /**
   * Documents from elsewhere (the admin API's, in Redis), as virtual files
   * merged with the folder's by the same rules (mergeFiles); a change of
   * theirs rebuilds the served set at once.
   */
  readonly overlay?: { files(): ReadonlyMap<string, FileView>; onChange(listener: () => void): void };
}

export interface FolderDocumentStore extends DocumentStore {
  /** Reads the folder now (the first call is the initial load). Resolves when the state is current, changed files settled. */
  rescan(): Promise<void>;
  /** False until the first scan has completed. */
  loaded(): boolean;
  /** Documents served from their last valid copy because their file is invalid now. */
  stale(): readonly DocumentKey[];
  /** Starts file events and the periodic rescan (openDocumentStore does, after the first load). */
  watch(): void;
}

interface FileState extends FileView {
  /** mtime, ctime, size and inode (or the problem of a broken entry): a change of any means the file is read again. */
  readonly stamp: string;
}

/** While file events cannot be had and pollFallback is 0, the folder is rescanned this often all the same. */
const EMERGENCY_POLL_MS = 2_000;

const keyOf = (d: PolicyDocument): DocumentKey => `${d.kind}/${d.metadata.namespace}/${d.metadata.name}`;
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const stampOf = (entry: ListedFile): string => (entry.stats ? `${entry.stats.mtimeMs}:${entry.stats.ctimeMs}:${entry.stats.size}:${entry.stats.ino}` : `broken:${entry.problem}`);
const DELETED = 'deleted';

/**
 * The policy documents of a folder, validated per document, kept current by
 * file events (one watcher per folder) with a periodic stat-only rescan behind
 * them, and written to by the admin API through the same folder, so replicas
 * watching one folder converge on the same documents.
 *
 * Invariants (which copy serves: src/policy-server/document-merge.ts):
 * - A document that fails validation is rejected alone: the other documents
 *   of its file and of the folder apply.
 * - A document that was valid and turns invalid, and every document of a file
 *   that stops parsing, is unreadable or empty, keeps its last valid copy in
 *   service until it is fixed or its file is deleted; the error is reported
 *   all the same. A replica started while the document is invalid has no
 *   earlier copy to keep, so replicas agree again once the document is fixed.
 * - A changed or deleted file counts once it has stayed so for settleMs.
 * - The same key in two files: the serving copy keeps serving, the other copy is an error.
 * - A folder that cannot be read at all keeps the current state (a transient
 *   mount problem must not withdraw every policy); it is logged and counted.
 *   So does a sub-folder: the files known under it are kept.
 * - No entry stops the watcher or the scan; an entry left out is reported once.
 */
function createDocumentStore(opts: DocumentStoreOptions, model: PolicyModel, deps: { logger: Logger; metrics: PolicyServerMetrics }): FolderDocumentStore {
  const log = deps.logger.child({ component: 'document-store' });
  const files = new Map<string, FileState>();
  let served = new Map<DocumentKey, ServedDocument>();
  let staleKeys: DocumentKey[] = [];
  let currentErrors: PolicyError[] = [];
  const loggedErrors = new Set<string>();
  const reportedSkips = new Map<string, string>();
  const settle = createFileSettle(opts.settleMs ?? 0);
  const listeners: Array<() => void> = [];
  let isLoaded = false;
  let closed = false;
  let folderWatch: FolderWatch | undefined;
  let watchedDirs: readonly string[] = [opts.folder];
  const polling = new AbortController();
  let emergencyTimer: NodeJS.Timeout | undefined;
  let debounceTimer: NodeJS.Timeout | undefined;
  let settleWait: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  let scanning: Promise<void> | undefined;
  let scanAgain = false;
  let writes: Promise<unknown> = Promise.resolve();
  let folderFailing = false;

  /** Whether a source file one of the file's documents read (a Filter's sourceFile) is not the version it read. */
  async function sourcesChanged(state: FileState): Promise<boolean> {
    for (const [source, stamp] of state.parsed.sourceFiles ?? []) if ((await sourceFileStamp(opts.folder, source)) !== stamp) return true;
    return false;
  }

  async function loadFile(rel: string, entry: ListedFile, stamp: string): Promise<FileState> {
    const fileError = (reason: string): FileState => ({
      stamp,
      mtimeMs: entry.stats?.mtimeMs ?? 0,
      parsed: { documents: [], errors: [{ source: { file: rel, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason }] },
      stored: new Map(),
    });
    if (!entry.stats) return fileError(entry.problem);
    if (entry.stats.size > model.maxFileBytes) return fileError(`file too large: at most ${model.maxFileBytes} bytes (got ${entry.stats.size}); no document of it applies`);
    let text: string;
    try {
      text = await readFile(path.join(opts.folder, rel), 'utf8');
    } catch (err) {
      // Stamp '': read again on the next scan.
      return { ...fileError(`cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`), stamp: '' };
    }
    const parsed = await model.parseFile(text, rel);
    const stored = new Map<DocumentKey, ServedDocument>();
    for (const { index, document, digest } of parsed.documents) {
      const key = keyOf(document);
      if (!stored.has(key)) stored.set(key, { key, document, digest, file: rel, index });
    }
    return { stamp, mtimeMs: entry.stats.mtimeMs, parsed, stored };
  }

  /** Rebuilds the served set from the per-file states; true when documents or errors changed. */
  function rebuild(): boolean {
    const merged = mergeFiles(opts.overlay ? new Map([...files, ...opts.overlay.files()]) : files, served);
    const fingerprint = (docs: Map<DocumentKey, ServedDocument>, errs: PolicyError[]): string => JSON.stringify([[...docs.values()].map((d) => [d.key, d.digest, d.file]).sort(), errs]);
    const changed = fingerprint(merged.served, merged.errors) !== fingerprint(served, currentErrors);
    served = merged.served;
    currentErrors = merged.errors;
    staleKeys = merged.stale;
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
      const keptPrevious = e.document === undefined ? staleKeys.some((k) => served.get(k)?.file === e.source.file) : staleKeys.includes(e.document);
      log.warn({ file: e.source.file, document: e.source.index, key: e.document ?? null, field: e.field, reason: e.reason, keptPrevious }, `policy document rejected: ${line}`);
    }
    // Forget fixed errors, so one that comes back is logged again.
    for (const line of loggedErrors) if (!now.has(line)) loggedErrors.delete(line);
  }

  /** Entries the walk left out: each reported once, again only if it changes or comes back. */
  function reportSkipped(listing: FolderListing): void {
    for (const [rel, reason] of listing.skipped) {
      if (reportedSkips.get(rel) === reason) continue;
      reportedSkips.set(rel, reason);
      log.warn({ entry: rel, reason }, `policy folder entry skipped: ${rel}: ${reason}`);
    }
    for (const rel of reportedSkips.keys()) if (!listing.skipped.has(rel)) reportedSkips.delete(rel);
  }

  /** One pass over the folder; resolves with ms until a file that is still changing should be looked at again. */
  async function scanOnce(): Promise<number | undefined> {
    let listing: FolderListing;
    try {
      listing = await listPolicyFolder(opts.folder);
    } catch (err) {
      deps.metrics.folderErrors.inc();
      if (!folderFailing) log.error({ folder: opts.folder, err: (err as Error).message }, 'cannot read the policy folder; keeping the current documents');
      folderFailing = true;
      return undefined;
    }
    if (folderFailing) log.info({ folder: opts.folder }, 'policy folder readable again');
    folderFailing = false;
    watchedDirs = listing.dirs;
    folderWatch?.sync(watchedDirs);
    reportSkipped(listing);
    const now = Date.now();
    let wait: number | undefined;
    // The first load has no copy to protect: it takes the folder as it is.
    const settled = (rel: string, stamp: string, touchedAt: number | undefined): boolean => {
      const left = isLoaded ? settle.left(rel, stamp, touchedAt, now) : 0;
      if (left > 0) wait = Math.min(wait ?? left, left);
      return left === 0;
    };
    const underUnlisted = (rel: string): boolean => listing.unlisted.some((dir) => rel.startsWith(`${dir}/`));
    for (const rel of [...files.keys()]) {
      if (listing.files.has(rel) || underUnlisted(rel)) continue;
      if (settled(rel, DELETED, undefined)) files.delete(rel);
    }
    for (const [rel, entry] of listing.files) {
      const stamp = stampOf(entry);
      const known = files.get(rel);
      if (known?.stamp === stamp && !(await sourcesChanged(known))) {
        settle.unchanged(rel);
        continue;
      }
      const touchedAt = entry.stats ? Math.max(entry.stats.mtimeMs, entry.stats.ctimeMs) : undefined;
      // A broken entry keeps what it served (see mergeFiles): nothing to wait for.
      if (entry.stats && !settled(rel, stamp, touchedAt)) continue;
      files.set(rel, await loadFile(rel, entry, stamp));
    }
    settle.prune((rel) => files.has(rel) || listing.files.has(rel));
    const changed = rebuild();
    const first = !isLoaded;
    isLoaded = true;
    if (first) log.info({ folder: opts.folder, documents: served.size, invalid: currentErrors.length }, 'policy folder loaded');
    if (changed && !first && !closed) notify();
    if (folderWatch?.degraded() && opts.pollMs <= 0) scheduleEmergencyPoll();
    return wait;
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

  /** Waits `ms` for a changing file to settle; close() cuts it short. */
  function settlePause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        settleWait = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      settleWait = { timer, wake };
    });
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
        const wait = await scanOnce();
        if (wait !== undefined && !closed) {
          await settlePause(wait);
          scanAgain = true;
        }
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

  function scheduleEmergencyPoll(): void {
    if (closed || emergencyTimer) return;
    log.warn({ everyMs: EMERGENCY_POLL_MS }, 'file events are incomplete and policies.pollFallback is 0: rescanning the folder periodically until watching works again');
    emergencyTimer = setTimeout(() => {
      emergencyTimer = undefined;
      void rescan();
    }, EMERGENCY_POLL_MS);
    emergencyTimer.unref();
  }

  function startWatching(): void {
    if (closed) return;
    folderWatch = createFolderWatch(scheduleRescan, log);
    folderWatch.sync(watchedDirs);
    if (folderWatch.degraded() && opts.pollMs <= 0) scheduleEmergencyPoll();
    if (opts.pollMs > 0) {
      // Scan failures are counted and logged inside rescan: a poll is simply tried again at its pace.
      const every = opts.pollMs;
      void runBackgroundLoop(async () => (await rescan(), every), { signal: polling.signal, firstDelayMs: every, backoff: { baseMs: every, maxMs: every }, random: () => 0, onError: () => undefined });
    }
  }

  function serialised<T>(task: () => Promise<T>): Promise<T> {
    const run = writes.then(task);
    writes = run.catch(() => undefined);
    return run;
  }

  /** The file holding `key` now (the serving copy first), served or in error, with how many documents it has. */
  function locate(key: DocumentKey): { file: string; index: number; documents: number } | undefined {
    const count = (rel: string): number => {
      const p = files.get(rel)?.parsed;
      if (!p) return 0;
      return new Set([...p.documents.map((d) => d.index), ...p.errors.map((e) => e.source.index)]).size;
    };
    const serving = served.get(key);
    if (serving && files.get(serving.file)?.stored.get(key)) return { file: serving.file, index: files.get(serving.file)!.stored.get(key)!.index, documents: count(serving.file) };
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
    await writeFileAtomic(
      abs,
      parts
        .filter((p): p is string => p !== undefined)
        .map((p) => p.replace(/^---\s*\n/, ''))
        .join('---\n'),
    );
    await recordOwnWrite(rel);
  }

  /** Notes what this store just wrote (or deleted): whole by construction, so the rescan adopts it without settling. */
  async function recordOwnWrite(rel: string): Promise<void> {
    try {
      settle.own(rel, stampOf({ stats: await stat(path.join(opts.folder, rel)) }));
    } catch {
      settle.own(rel, DELETED);
    }
  }

  opts.overlay?.onChange(() => {
    if (!closed && rebuild() && isLoaded) notify();
  });

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
          await recordOwnWrite(rel);
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
        else {
          await rm(path.join(opts.folder, ...at.file.split('/')), { force: true });
          await recordOwnWrite(at.file);
        }
        await rescan();
        return true;
      });
    },

    async close() {
      closed = true;
      clearTimeout(debounceTimer);
      clearTimeout(emergencyTimer);
      polling.abort();
      settleWait?.wake();
      folderWatch?.close();
      await scanning;
      await writes;
    },
    watch: startWatching,
  };
}

/** Creates the folder if needed, loads it once, then watches it. */
export async function openDocumentStore(opts: DocumentStoreOptions, model: PolicyModel, deps: { logger: Logger; metrics: PolicyServerMetrics }): Promise<FolderDocumentStore> {
  await mkdir(opts.folder, { recursive: true });
  const store = createDocumentStore(opts, model, deps);
  await store.rescan();
  store.watch();
  return store;
}
