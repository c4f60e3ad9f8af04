import { readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../telemetry/logger.ts';
import type { EffectiveDocument, RefusedDocument, StoredSnapshot } from './snapshot-file.ts';
import { outdatedFileFor, parsePersisted, persistedText, versionOf, writeFileAtomic } from './snapshot-file.ts';

export type { RefusedDocument, StoredSnapshot } from './snapshot-file.ts';

import type { DocumentKey, PolicyDocument, RegistryService, WorkloadRef } from '../../policy/types.ts';
import type { DocumentEnvelope, DocumentRejection, DocumentValidator } from './subscriber-validate.ts';
import { checkEnvelope, documentKey, policyModelValidator } from './subscriber-validate.ts';

/** A snapshot as received from a server, before validation. */
export interface ReceivedSnapshot {
  readonly version: string;
  readonly documents: readonly DocumentEnvelope[];
  readonly services: readonly RegistryService[];
}

interface AckResult {
  readonly version: string;
  /** False when any document was refused (a NACK); the rest of the version applies all the same. */
  readonly accepted: boolean;
  readonly errors: readonly DocumentRejection[];
}

interface ApplyResult {
  readonly ack: AckResult;
  readonly snapshot: StoredSnapshot;
  /** False when the documents and services in force are what they were before. */
  readonly changed: boolean;
}

export interface PolicySnapshotStore {
  /** The file the last-known-good copy lives in. */
  readonly file: string;
  /**
   * Reads the persisted copy and, when nothing was applied yet, makes it the
   * current state. A missing, unreadable or corrupt file gives undefined
   * (logged); documents that no longer validate are dropped (logged). Never throws.
   */
  load(): Promise<StoredSnapshot | undefined>;
  /**
   * Validates a received snapshot document by document and makes the result
   * current at once (in memory); persistence follows in the background,
   * latest state first (see flush()).
   */
  apply(received: ReceivedSnapshot, receivedAt: number): ApplyResult;
  /** Work `apply` needs done first (checks of your own compiled in the sandbox); undefined when none. Never rejects. */
  prepare(received: ReceivedSnapshot): Promise<void> | undefined;
  current(): StoredSnapshot | undefined;
  /** Resolves when every state applied so far is on disk (or its write failed, logged; it is retried later). */
  flush(): Promise<void>;
  stats(): { readonly writes: number; readonly writeFailures: number; readonly lastWriteError: string | undefined };
  /** Whether what is in force would survive a restart: for /ready, metrics and /config_dump. */
  persistence(): PersistenceStatus;
  /** Stops retrying failed writes. */
  close(): void;
}

export interface PersistenceStatus {
  readonly file: string;
  /** `failing`: the last write (or the boot check) failed; writes are retried with backoff. */
  readonly state: 'ok' | 'failing';
  /** The version the file on disk holds, as far as this process knows. */
  readonly persistedVersion: string | undefined;
  /** What a restart with no policy server would find: the copy in force, an older copy set aside (refused), an older copy in place, or none. */
  readonly diskCopy: 'current' | 'outdated-set-aside' | 'outdated' | 'none';
  readonly failures: number;
  readonly lastError: string | undefined;
  /** Epoch ms of the first failure of the current streak. */
  readonly failingSince: number | undefined;
  /** The copy found at boot and not trusted, and why; the owner admits nothing until a server answers. */
  readonly refusedAtBoot: { readonly version: string | undefined; readonly reason: string } | undefined;
}

/** One file per workload, so sidecars of different workloads can share a stateDir. */
export function snapshotFileFor(stateDir: string, workload: WorkloadRef): string {
  return path.join(stateDir, `policy-snapshot.${workload.namespace}.${workload.service}.json`);
}

/**
 * The sidecar's last-known-good policy: per document in memory, and the whole
 * effective state persisted as one JSON file replaced atomically (temp file,
 * fsync, rename, fsync of the folder), so a crash leaves the old file or the
 * new one, never half of either.
 *
 * A copy that cannot be written must never be trusted later in its place
 * (a restart would enforce an older policy: what a DENY added since is open):
 * - a failed write is retried with backoff, counted and reported (persistence());
 * - the older copy is renamed to <file>.outdated (a rename needs no free space),
 *   and a boot that finds only that name refuses it;
 * - a boot rewrites the copy it loads before trusting it: when stateDir takes
 *   no write (read-only, full), a newer version may have been lost the same
 *   way, so the copy is refused. So is a copy that cannot be read or parsed.
 * A refused copy is never made current; the owner admits nothing until a
 * server answers (see persistence().refusedAtBoot).
 *
 * Invariant: current() only ever holds documents that passed `validate`.
 */
export function createPolicySnapshotStore(opts: {
  file: string;
  logger: Logger;
  /** Default: the policy model's validator with default limits. */
  validate?: DocumentValidator;
  /** Asynchronous work before documents are validated (compiling Filter sources for `validate` to read). */
  prepare?: (envelopes: readonly DocumentEnvelope[]) => Promise<void> | undefined;
  /** First retry of a failed write after this long, doubling up to 30 s. Default 1 s. */
  retryMs?: number;
  now?: () => number;
  /** Each write's outcome (the boot check included), e.g. for metrics. */
  onWrite?: (ok: boolean) => void;
}): PolicySnapshotStore {
  const { file, logger } = opts;
  const validate = opts.validate ?? policyModelValidator();
  const now = opts.now ?? Date.now;
  const outdated = outdatedFileFor(file);
  const retryBaseMs = opts.retryMs ?? 1_000;
  let state: StoredSnapshot | undefined;
  let pending: StoredSnapshot | undefined;
  // Every write of the file (the boot check too) runs on this chain, one at a time.
  let chain: Promise<void> = Promise.resolve();
  let drainQueued = false;
  let loading: Promise<StoredSnapshot | undefined> | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelay = retryBaseMs;
  let closed = false;
  let writes = 0;
  let writeFailures = 0;
  let lastWriteError: string | undefined;
  let failingSince: number | undefined;
  let persistedVersion: string | undefined;
  let persistedPrint: string | undefined;
  let diskCopy: PersistenceStatus['diskCopy'] = 'none';
  let refusedAtBoot: PersistenceStatus['refusedAtBoot'];

  const serial = (task: () => Promise<void>): Promise<void> => (chain = chain.then(task));

  const written = (s: { version: string }, print: string | undefined): void => {
    writes++;
    if (failingSince !== undefined) logger.info({ file, version: s.version }, 'policy snapshot persisted again');
    lastWriteError = undefined;
    failingSince = undefined;
    retryDelay = retryBaseMs;
    persistedVersion = s.version;
    persistedPrint = print;
    diskCopy = 'current';
    opts.onWrite?.(true);
  };

  const failed = (err: unknown): void => {
    writeFailures++;
    lastWriteError = (err as Error).message;
    failingSince ??= now();
    opts.onWrite?.(false);
  };

  /** After a failed write: the older copy must not pass for the current one on a restart. */
  const setAsideOutdated = async (): Promise<void> => {
    if (diskCopy === 'outdated-set-aside' || diskCopy === 'none') return;
    try {
      await rename(file, outdated);
      diskCopy = 'outdated-set-aside';
      logger.warn({ file, outdated, version: persistedVersion }, 'set the outdated policy snapshot aside: a restart without a policy server admits nothing rather than enforce it');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        diskCopy = 'none';
        return;
      }
      if (diskCopy !== 'outdated') {
        logger.error({ file, version: persistedVersion, err: (err as Error).message }, 'cannot set the outdated policy snapshot aside either: a restart refuses it only while stateDir takes no write');
      }
      diskCopy = 'outdated';
    }
  };

  const drain = async (): Promise<void> => {
    drainQueued = false;
    // Coalesces: while one write runs, only the newest state waits for the next.
    while (pending) {
      const next = pending;
      pending = undefined;
      const print = fingerprint(next);
      try {
        await writeFileAtomic(file, persistedText(next));
        written(next, print);
        // The copy is the newest again: a set-aside one is history.
        await rm(outdated, { force: true }).catch(() => undefined);
      } catch (err) {
        const first = failingSince === undefined;
        failed(err);
        if (first)
          logger.error(
            { err: lastWriteError, file, version: next.version },
            'cannot persist the policy snapshot; it applies in memory, and writes are retried (see /ready, meshgate_policy_snapshot_persisted)',
          );
        // The same documents on disk already (only the receipt time is newer): that copy is still right.
        if (print !== persistedPrint) await setAsideOutdated();
        scheduleRetry();
      }
    }
  };

  const queueDrain = (): void => {
    if (drainQueued) return;
    drainQueued = true;
    void serial(drain);
  };

  const scheduleRetry = (): void => {
    if (closed || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      if (!state || failingSince === undefined) return;
      pending ??= state;
      queueDrain();
    }, retryDelay);
    retryTimer.unref();
    retryDelay = Math.min(retryDelay * 2, 30_000);
  };

  const refuse = (version: string | undefined, reason: string): undefined => {
    refusedAtBoot = { version, reason };
    logger.error({ file, version, reason }, 'not trusting the persisted policy snapshot: admitting nothing until a policy server answers');
    return undefined;
  };

  const boot = async (): Promise<StoredSnapshot | undefined> => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') return refuse(undefined, `cannot read ${file} (${code ?? (err as Error).message})`);
      const aside = await readFile(outdated, 'utf8').catch(() => undefined);
      if (aside === undefined) {
        logger.info({ file }, 'no persisted policy snapshot');
        return undefined;
      }
      diskCopy = 'outdated-set-aside';
      return refuse(versionOf(aside), 'the persisted copy was set aside as outdated: a newer policy could not be written before the restart');
    }
    const early = parsePersisted(text);
    if (typeof early !== 'string') await opts.prepare?.(early.documents);
    const loaded = readPersisted(text, file, validate, logger);
    if (loaded === undefined) return refuse(undefined, `${file} is corrupt`);
    diskCopy = 'outdated';
    persistedVersion = loaded.version;
    // Rewriting the copy proves stateDir takes writes now; if it does not, a newer copy may have been lost the same way.
    let probe: unknown;
    await serial(async () => {
      try {
        await writeFileAtomic(file, text);
        written(loaded, fingerprint(loaded));
        await rm(outdated, { force: true }).catch(() => undefined);
      } catch (err) {
        failed(err);
        probe = err;
      }
    });
    if (probe !== undefined) return refuse(loaded.version, `stateDir takes no write (${(probe as Error).message}): a newer policy may have failed to persist before the restart`);
    if (state === undefined) state = loaded;
    return loaded;
  };

  return {
    file,
    load: () => (loading ??= boot()),
    prepare: (received) => opts.prepare?.(received.documents),
    apply(received, receivedAt) {
      const previous = new Map((state?.documents ?? []).map((d) => [d.key, d]));
      const seen = new Set<DocumentKey>();
      const documents: EffectiveDocument[] = [];
      const refused: RefusedDocument[] = [];
      const errors: DocumentRejection[] = [];
      for (const envelope of received.documents) {
        const key = documentKey(envelope.kind, envelope.namespace, envelope.name);
        if (seen.has(key)) {
          errors.push({ document: key, field: '', reason: 'sent twice in one snapshot; the first copy applies' });
          continue;
        }
        seen.add(key);
        const checked = checkEnvelope(envelope, validate);
        if (checked.ok) {
          documents.push({ key, envelope, document: checked.document });
          continue;
        }
        errors.push(...checked.errors);
        // One bad document never blocks a workload: its previous good copy keeps applying.
        const last = previous.get(key);
        if (last) documents.push(last);
        refused.push({ key, kept: last !== undefined });
      }
      const next: StoredSnapshot = { version: received.version, receivedAt, documents, services: received.services, refused };
      const changed = state === undefined || fingerprint(state) !== fingerprint(next);
      state = next;
      pending = next;
      queueDrain();
      return { ack: { version: received.version, accepted: errors.length === 0, errors }, snapshot: next, changed };
    },
    current: () => state,
    flush: () => chain,
    stats: () => ({ writes, writeFailures, lastWriteError }),
    persistence: () => ({
      file,
      state: failingSince === undefined ? 'ok' : 'failing',
      persistedVersion: diskCopy === 'none' ? undefined : persistedVersion,
      diskCopy,
      failures: writeFailures,
      lastError: lastWriteError,
      failingSince,
      refusedAtBoot,
    }),
    close() {
      closed = true;
      clearTimeout(retryTimer);
      retryTimer = undefined;
    },
  };
}

function fingerprint(s: StoredSnapshot): string {
  return JSON.stringify([s.version, s.documents.map((d) => [d.key, d.envelope.digest]), s.services, s.refused]);
}

function readPersisted(text: string, file: string, validate: DocumentValidator, logger: Logger): StoredSnapshot | undefined {
  const parsed = parsePersisted(text);
  if (typeof parsed === 'string') {
    logger.error({ file, err: parsed }, 'persisted policy snapshot is corrupt; ignoring it');
    return undefined;
  }
  const documents: EffectiveDocument[] = [];
  for (const envelope of parsed.documents) {
    const key = documentKey(envelope.kind, envelope.namespace, envelope.name);
    const checked = checkEnvelope(envelope, validate);
    if (checked.ok) documents.push({ key, envelope, document: checked.document });
    else logger.error({ file, document: key, errors: checked.errors }, 'persisted policy document no longer validates; dropping it');
  }
  return { version: parsed.version, receivedAt: parsed.receivedAt, documents, services: parsed.services, refused: parsed.refused };
}
