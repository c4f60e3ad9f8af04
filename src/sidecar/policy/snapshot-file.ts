import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { DocumentKey, PolicyDocument, RegistryService } from '../../policy/types.ts';
import type { DocumentEnvelope } from './subscriber-validate.ts';

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

/*
 * The last-known-good file of a sidecar: its format, and how it is written
 * (atomically) and read back (field by field; documents are validated again
 * by the store).
 */

const FORMAT = 1;

export interface PersistedFile {
  readonly format: typeof FORMAT;
  readonly version: string;
  readonly receivedAt: string;
  readonly documents: readonly DocumentEnvelope[];
  readonly services: readonly RegistryService[];
  readonly refused: readonly RefusedDocument[];
}

/**
 * Where the copy goes when a newer policy could not be written over it: a
 * restart that finds this name (and no copy) knows the copy is outdated. A
 * rename needs no free space, so it works on a full disk, where writes fail.
 */
export function outdatedFileFor(file: string): string {
  return `${file}.outdated`;
}

export function persistedText(s: StoredSnapshot): string {
  const persisted: PersistedFile = {
    format: FORMAT,
    version: s.version,
    receivedAt: new Date(s.receivedAt).toISOString(),
    documents: s.documents.map((d) => d.envelope),
    services: s.services,
    refused: s.refused,
  };
  return `${JSON.stringify(persisted)}\n`;
}

/** The version a persisted (or set aside) file names, if it names one. */
export function versionOf(text: string): string | undefined {
  const parsed = parsePersisted(text);
  return typeof parsed === 'string' ? undefined : parsed.version;
}

/** The persisted file, checked field by field; a string says what is wrong. */
export function parsePersisted(text: string): (Omit<PersistedFile, 'receivedAt'> & { receivedAt: number }) | string {
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
  return isRecord(v) && ['kind', 'namespace', 'name', 'json', 'digest'].every((k) => typeof v[k] === 'string') && (v.javascript === undefined || typeof v.javascript === 'string');
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
export async function writeFileAtomic(file: string, text: string): Promise<void> {
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
