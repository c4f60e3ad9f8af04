import type { DocumentKey, PolicyDocument, PolicyError, RegistryService, WorkloadRef } from '../policy/types.ts';

/*
 * The seams inside the policy-server role, so its parts (document store,
 * subscription stream, admin API) can be built and tested apart. Only
 * src/policy-server/policy-server.ts wires them together.
 */

/** Who made a change: from the admin caller's certificate or bearer token. */
export interface Actor {
  readonly subject: string;
  readonly role: 'admin' | 'developer' | 'viewer';
  /** How the caller proved it: `mtls` or `jwt`. */
  readonly via: 'mtls' | 'jwt';
}

export interface StoredDocument {
  readonly key: DocumentKey;
  readonly document: PolicyDocument;
  /** sha256 hex of the canonical JSON of the document. */
  readonly digest: string;
  /** File it was read from (relative to the policy folder). */
  readonly file: string;
}

export type StoreWriteResult =
  | { readonly ok: true; readonly key: DocumentKey; readonly digest: string; readonly file: string }
  | { readonly ok: false; readonly errors: readonly PolicyError[] }
  | StoreRefusal;

/** A write the store cannot take: the document lives where the API may not write, or the store is unreachable. Nothing was written. */
export interface StoreRefusal {
  readonly ok: false;
  readonly refused: 'read_only' | 'unavailable';
  readonly reason: string;
}

/**
 * Every valid document, read from the watched policy folder. Writes from the
 * admin API go to the folder too (atomic rename), so replicas that watch the
 * same folder converge on the same state and the same versions.
 */
export interface DocumentStore {
  documents(): readonly StoredDocument[];
  /** Documents rejected by validation, with file/document/field/reason. The rest apply. */
  errors(): readonly PolicyError[];
  /** Validates and writes one document (YAML or JSON text). Invalid: nothing is written. */
  put(text: string, actor?: Actor): Promise<StoreWriteResult>;
  /** Removes a document written through the API or the folder; false when absent. */
  remove(key: DocumentKey, actor?: Actor): Promise<boolean | StoreRefusal>;
  /** Called after every change that reached the in-memory state (debounced by the store). */
  onChange(listener: () => void): void;
  close(): Promise<void>;
}

/** One sidecar's stream as the admin API shows it. */
export interface SubscriberView {
  readonly sidecarId: string;
  readonly workload: WorkloadRef;
  readonly spiffeId: string;
  readonly address: string;
  readonly connectedAt: string;
  /** Latest version sent, and the latest the sidecar accepted. */
  readonly sentVersion: string | undefined;
  readonly ackedVersion: string | undefined;
  /** Latest NACK: version, errors, when. */
  readonly lastNack: { readonly version: string; readonly errors: readonly { document: string; field: string; reason: string }[]; readonly at: string } | undefined;
}

export interface SubscriberDirectory {
  subscribers(): readonly SubscriberView[];
  /** The registry as served: registered endpoints plus static entries. */
  registry(): readonly RegistryService[];
}

export interface AuditEntry {
  readonly time: string;
  readonly actor: Actor;
  readonly action: 'put' | 'delete';
  readonly document: DocumentKey;
  /** Unified-style diff of the document's YAML, before -> after. */
  readonly diff: string;
  readonly result: 'applied' | 'rejected' | 'forbidden';
  readonly reason?: string;
}

export interface AuditLog {
  append(entry: AuditEntry): Promise<void>;
  read(opts?: { limit?: number }): Promise<readonly AuditEntry[]>;
}
