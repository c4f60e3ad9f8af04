import type { WireDocument, WireSnapshot } from '../policy/policy-api.ts';
import { encodeService, wireDocumentOf } from '../policy/policy-api.ts';
import type { PolicyDocument, PolicySnapshot, RegistryService, WorkloadRef } from '../policy/types.ts';
import type { StoredDocument } from './contracts.ts';

/** What the builder needs from the policy model (src/policy/snapshot.ts). */
export interface SnapshotModel {
  /**
   * The workload's documents (selector match) and registry part (narrowed to
   * `destinations` and the backends of its Routes to them), under a content
   * version that depends on nothing else.
   */
  compile(documents: readonly StoredDocument[], services: readonly RegistryService[], workload: WorkloadRef, destinations: readonly string[] | undefined): PolicySnapshot;
  /** Canonical JSON (sorted keys): what the sidecar receives, and what a document's digest is computed over. */
  canonicalJson(document: PolicyDocument): string;
}

/** Appended to the content version of snapshots sent during the registry warm-up. */
const WARMING_SUFFIX = '-warming';

export interface BuiltSnapshot {
  readonly version: string;
  readonly message: WireSnapshot;
  /** The message encoded once, written as is to every stream of the same workload and destinations. */
  readonly encoded: Buffer | undefined;
}

export interface SnapshotBuilder {
  /**
   * The snapshot of one workload. Cached per (workload, destinations) until
   * invalidate(): a change is computed once per group, not once per stream.
   */
  build(workload: WorkloadRef, destinations: readonly string[] | undefined): BuiltSnapshot;
  /** Drops the cache after a change of documents or registry. */
  invalidate(): void;
}

/**
 * Snapshots per workload. The version is the model's content digest of the
 * selected documents and registry part: it does not depend on the replica,
 * the time or the order of events, so every replica with the same folder and
 * registry computes the same version and a sidecar failing over sees no
 * change. Compiled once per (workload, destinations) group per change, and
 * encoded once for every stream of the group.
 */
export function createSnapshotBuilder(
  source: {
    documents(): readonly StoredDocument[];
    services(): readonly RegistryService[];
    /** True during the registry warm-up after start (see policy-server.ts). */
    warming?(): boolean;
  },
  model: SnapshotModel,
  serverId: string,
  /** The response serializer of the gRPC method, to encode each snapshot once for all its streams. */
  encode?: (message: WireSnapshot) => Buffer,
): SnapshotBuilder {
  let cache = new Map<string, BuiltSnapshot>();
  let documents: readonly StoredDocument[] | undefined;
  let byKey = new Map<string, StoredDocument>();
  // Documents are immutable per digest: their wire form is built once across changes.
  let wireDocs = new Map<string, WireDocument>();

  const wireDoc = (d: StoredDocument): WireDocument => {
    let w = wireDocs.get(d.digest);
    if (!w) {
      w = wireDocumentOf(d.document, model.canonicalJson(d.document), d.digest);
      wireDocs.set(d.digest, w);
    }
    return w;
  };

  return {
    build(workload, destinations) {
      const wanted = destinations && destinations.length > 0 ? [...new Set(destinations)].sort() : undefined;
      const key = `${workload.namespace}/${workload.service}|${wanted?.join(',') ?? '*'}`;
      const hit = cache.get(key);
      if (hit) return hit;
      if (!documents) {
        documents = source.documents();
        byKey = new Map(documents.map((d) => [d.key, d]));
      }
      const snapshot = model.compile(documents, source.services(), workload, wanted);
      const warming = source.warming?.() ?? false;
      // The flag changes what a sidecar does with the registry, so it changes the version: the end of the
      // warm-up reaches every stream even when the registry did not change.
      const version = warming ? `${snapshot.version}${WARMING_SUFFIX}` : snapshot.version;
      const message: WireSnapshot = {
        version,
        documents: snapshot.documents.map((doc) => wireDoc(byKey.get(`${doc.kind}/${doc.metadata.namespace}/${doc.metadata.name}`)!)),
        services: snapshot.services.map(encodeService),
        serverId,
        registryWarming: warming,
      };
      const built: BuiltSnapshot = { version, message, encoded: encode?.(message) };
      cache.set(key, built);
      return built;
    },
    invalidate() {
      cache = new Map();
      documents = undefined;
      // Keep wire forms of documents still served; forget the rest.
      const live = new Set(source.documents().map((d) => d.digest));
      const kept = new Map<string, WireDocument>();
      for (const [digest, w] of wireDocs) if (live.has(digest)) kept.set(digest, w);
      wireDocs = kept;
    },
  };
}
