import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../telemetry/logger.ts';
import { checkEnvelope, documentKey, policyModelValidator } from './subscriber-validate.ts';
import type { DocumentEnvelope, DocumentRejection, DocumentValidator } from './subscriber-validate.ts';
import type { DocumentKey, PolicyDocument, RegistryService, WorkloadRef } from './types.ts';

/** A snapshot as received from a server, before validation. */
export interface ReceivedSnapshot {
  readonly version: string;
  readonly documents: readonly DocumentEnvelope[];
  readonly services: readonly RegistryService[];
}

/** One document in force, with the envelope it came in (what the disk copy keeps). */
export interface EffectiveDocument {
  readonly key: DocumentKey;
  readonly envelope: DocumentEnvelope;
  readonly document: PolicyDocument;
}

/** A refused document of the current version: `kept` when its previous good copy still applies. */
export interface RefusedDocument {
  readonly key: DocumentKey;
  readonly kept: boolean;
}

/**
 * What the sidecar enforces: the documents of `version` that validated, plus
 * the last good copy of each refused one that had one.
 */
export interface StoredSnapshot {
  /** The server's version this state was built from. */
  readonly version: string;
  /** Epoch ms when it was received (for a disk copy: when the server last sent it). */
  readonly receivedAt: number;
  readonly documents: readonly EffectiveDocument[];
  readonly services: readonly RegistryService[];
  readonly refused: readonly RefusedDocument[];
}

export interface AckResult {
  readonly version: string;
  /** False when any document was refused (a NACK); the rest of the version applies all the same. */
  readonly accepted: boolean;
  readonly errors: readonly DocumentRejection[];
}

export interface ApplyResult {
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
  current(): StoredSnapshot | undefined;
  /** Resolves when every state applied so far is on disk (or its write failed, logged). */
  flush(): Promise<void>;
  stats(): { readonly writes: number; readonly writeFailures: number; readonly lastWriteError: string | undefined };
}

/** One file per workload, so sidecars of different workloads can share a stateDir. */
export function snapshotFileFor(stateDir: string, workload: WorkloadRef): string {
  return path.join(stateDir, `policy-snapshot.${workload.namespace}.${workload.service}.json`);
}

const FORMAT = 1;

interface PersistedFile {
  readonly format: typeof FORMAT;
  readonly version: string;
  readonly receivedAt: string;
  readonly documents: readonly DocumentEnvelope[];
  readonly services: readonly RegistryService[];
  readonly refused: readonly RefusedDocument[];
}

/**
 * The sidecar's last-known-good policy: per document in memory, and the whole
 * effective state persisted as one JSON file replaced atomically (temp file,
 * fsync, rename, fsync of the folder), so a crash leaves the old file or the
 * new one, never half of either.
 *
 * Invariant: current() only ever holds documents that passed `validate`.
 */
export function createPolicySnapshotStore(opts: {
  file: string;
  logger: Logger;
  /** Default: the policy model's validator with default limits. */
  validate?: DocumentValidator;
}): PolicySnapshotStore {
  const { file, logger } = opts;
  const validate = opts.validate ?? policyModelValidator();
  let state: StoredSnapshot | undefined;
  let pending: StoredSnapshot | undefined;
  let writing: Promise<void> | undefined;
  let writes = 0;
  let writeFailures = 0;
  let lastWriteError: string | undefined;

  const persistLatest = async (): Promise<void> => {
    // Coalesces: while one write runs, only the newest state waits for the next.
    while (pending) {
      const next = pending;
      pending = undefined;
      try {
        await writeFileAtomic(file, `${JSON.stringify(toPersisted(next))}\n`);
        writes++;
        lastWriteError = undefined;
      } catch (err) {
        writeFailures++;
        lastWriteError = (err as Error).message;
        logger.error({ err: lastWriteError, file, version: next.version }, 'cannot persist the policy snapshot; it applies in memory, but a restart without a server would not find it');
      }
    }
    writing = undefined;
  };

  return {
    file,
    async load() {
      const loaded = await readPersisted(file, validate, logger);
      if (loaded && state === undefined) state = loaded;
      return loaded;
    },
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
      writing ??= persistLatest();
      return { ack: { version: received.version, accepted: errors.length === 0, errors }, snapshot: next, changed };
    },
    current: () => state,
    flush: () => writing ?? Promise.resolve(),
    stats: () => ({ writes, writeFailures, lastWriteError }),
  };
}

function fingerprint(s: StoredSnapshot): string {
  return JSON.stringify([s.version, s.documents.map((d) => [d.key, d.envelope.digest]), s.services, s.refused]);
}

function toPersisted(s: StoredSnapshot): PersistedFile {
  return {
    format: FORMAT,
    version: s.version,
    receivedAt: new Date(s.receivedAt).toISOString(),
    documents: s.documents.map((d) => d.envelope),
    services: s.services,
    refused: s.refused,
  };
}

async function readPersisted(file: string, validate: DocumentValidator, logger: Logger): Promise<StoredSnapshot | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') logger.info({ file }, 'no persisted policy snapshot');
    else logger.error({ file, err: (err as Error).message }, 'cannot read the persisted policy snapshot; ignoring it');
    return undefined;
  }
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

/** The persisted file, checked field by field; a string says what is wrong. */
function parsePersisted(text: string): (Omit<PersistedFile, 'receivedAt'> & { receivedAt: number }) | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  if (!isRecord(raw)) return 'expected a JSON object';
  if (raw.format !== FORMAT) return `unknown format ${JSON.stringify(raw.format)} (expected ${FORMAT})`;
  if (typeof raw.version !== 'string') return 'version: expected a string';
  const receivedAt = typeof raw.receivedAt === 'string' ? Date.parse(raw.receivedAt) : Number.NaN;
  if (Number.isNaN(receivedAt)) return 'receivedAt: expected an ISO date';
  if (!Array.isArray(raw.documents) || !raw.documents.every(isEnvelope)) return 'documents: expected a list of {kind, namespace, name, json, digest}';
  if (!Array.isArray(raw.services) || !raw.services.every(isService)) return 'services: expected a list of registry services';
  const refused = Array.isArray(raw.refused) ? raw.refused.filter((r): r is RefusedDocument => isRecord(r) && typeof r.key === 'string' && typeof r.kept === 'boolean') : [];
  return { format: FORMAT, version: raw.version, receivedAt, documents: raw.documents, services: raw.services, refused };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isEnvelope(v: unknown): v is DocumentEnvelope {
  return isRecord(v) && ['kind', 'namespace', 'name', 'json', 'digest'].every((k) => typeof v[k] === 'string');
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return isRecord(v) && Object.values(v).every((x) => typeof x === 'string');
}

function isService(v: unknown): v is RegistryService {
  return (
    isRecord(v) &&
    typeof v.name === 'string' &&
    typeof v.namespace === 'string' &&
    typeof v.external === 'boolean' &&
    Array.isArray(v.identities) &&
    v.identities.every((i) => typeof i === 'string') &&
    Array.isArray(v.endpoints) &&
    v.endpoints.every((e) => isRecord(e) && typeof e.address === 'string' && typeof e.weight === 'number' && isStringRecord(e.labels))
  );
}

/** Temp file in the same folder (rename is atomic only within a file system), fsync, rename, fsync the folder. */
async function writeFileAtomic(file: string, text: string): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  const tmp = `${file}.${randomUUID()}.tmp`;
  try {
    const handle = await open(tmp, 'w', 0o640);
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  // Makes the rename itself durable; some file systems cannot fsync a folder, and the data is safe already.
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    /* best effort */
  }
}
