import { createHash } from 'node:crypto';
import { resolveServiceRef } from './kinds/route.ts';
import { documentApplies } from './selector.ts';
import { isKind } from './typed-documents.ts';
import type { DocumentKey, PolicyDocument, PolicySnapshot, RegistryEndpoint, RegistryService, WorkloadRef } from './types.ts';

/*
 * The snapshot one workload receives, and its version. The version is a
 * content digest, so two policy-server replicas holding the same documents and
 * registry give a sidecar the same version whatever order they loaded things
 * in, and a sidecar that resumes with its current version can be told
 * "nothing changed".
 *
 * Invariant: everything that reaches a snapshot is ordered here (documents by
 * key, services by namespace and name, endpoints by address, identities
 * sorted), and hashed as canonical JSON (object keys sorted by UTF-16 code
 * units, never by locale).
 */

/**
 * JSON with object keys sorted at every level and no whitespace: equal values
 * give equal text. `undefined` members are left out (as JSON.stringify does);
 * values JSON cannot carry (NaN, Infinity, bigint, functions) throw.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${value} has no JSON form`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  if (typeof value === 'object') {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') return canonicalJson(toJSON.call(value));
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((key) => record[key] !== undefined)
      .sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
  }
  throw new TypeError(`canonicalJson: a ${typeof value} has no JSON form`);
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** sha256 hex of canonicalJson(doc): the `digest` of a document on the wire and in the store. */
export function documentDigest(doc: PolicyDocument): string {
  return sha256Hex(canonicalJson(doc));
}

/** A document, or one already digested (ValidDocument, the server's StoredDocument). */
export type SnapshotDocumentInput = PolicyDocument | { readonly document: PolicyDocument; readonly digest: string };

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function normalizeEndpoint(endpoint: RegistryEndpoint): RegistryEndpoint {
  return { address: endpoint.address, labels: { ...endpoint.labels }, weight: endpoint.weight };
}

function normalizeService(service: RegistryService): RegistryService {
  const endpoints = service.endpoints.map(normalizeEndpoint);
  endpoints.sort((a, b) => compareText(a.address, b.address) || compareText(canonicalJson(a.labels), canonicalJson(b.labels)) || a.weight - b.weight);
  return {
    name: service.name,
    namespace: service.namespace,
    endpoints,
    identities: [...new Set(service.identities)].sort(compareText),
    external: service.external,
  };
}

/** The version of a set of (key, digest) pairs and services: sha256 of canonical JSON, first 16 hex chars. */
export function snapshotVersion(documents: readonly { readonly key: DocumentKey; readonly digest: string }[], services: readonly RegistryService[]): string {
  const docs = documents.map((d) => [d.key, d.digest] as const).sort((a, b) => compareText(a[0], b[0]) || compareText(a[1], b[1]));
  const svcs = services.map(normalizeService).sort((a, b) => compareText(a.namespace, b.namespace) || compareText(a.name, b.name));
  return sha256Hex(canonicalJson({ documents: docs, services: svcs })).slice(0, 16);
}

/**
 * The snapshot of one workload: the documents whose selectors match it (sorted
 * by key) and the registry services it needs, under a content version.
 *
 * `destinations` (`name.namespace`, from the sidecar's Hello) narrows the
 * registry to those services plus the backends that the workload's Routes to
 * them send calls to; absent or empty, the whole registry is included.
 * Documents whose digest is given are not hashed again.
 */
export function compileSnapshot(documents: readonly SnapshotDocumentInput[], services: readonly RegistryService[], workload: WorkloadRef, destinations?: readonly string[]): PolicySnapshot {
  const entries = documents
    .map((input) => ('document' in input ? input : { document: input, digest: documentDigest(input) }))
    .filter((entry) => documentApplies(entry.document, workload))
    .map((entry) => ({ key: `${entry.document.kind}/${entry.document.metadata.namespace}/${entry.document.metadata.name}`, ...entry }))
    .sort((a, b) => compareText(a.key, b.key) || compareText(a.digest, b.digest))
    // Two inputs with one key (a store bug) must still give every replica the same snapshot.
    .filter((entry, i, all) => i === 0 || all[i - 1]!.key !== entry.key);

  let needed: ReadonlySet<string> | undefined;
  if (destinations && destinations.length > 0) {
    const wanted = new Set(destinations.map((d) => (d.includes('.') ? d : `${d}.${workload.namespace}`)));
    // Its own service too: a sidecar divides a global rate limit by its replicas when Redis is away (failureMode local).
    wanted.add(`${workload.service}.${workload.namespace}`);
    for (const { document } of entries) {
      if (!isKind(document, 'Route')) continue;
      const target = resolveServiceRef(document.spec.service, document.metadata.namespace);
      if (!wanted.has(`${target.name}.${target.namespace}`)) continue;
      for (const route of document.spec.routes) {
        for (const backend of route.backends ?? []) {
          if (!backend.service) continue;
          const ref = resolveServiceRef(backend.service, target.namespace);
          wanted.add(`${ref.name}.${ref.namespace}`);
        }
      }
    }
    needed = wanted;
  }

  const selected = (needed ? services.filter((s) => needed.has(`${s.name}.${s.namespace}`)) : services).map(normalizeService);
  selected.sort((a, b) => compareText(a.namespace, b.namespace) || compareText(a.name, b.name));
  return {
    version: snapshotVersion(entries, selected),
    documents: entries.map((entry) => entry.document),
    services: selected,
  };
}
