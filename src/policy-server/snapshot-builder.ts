import { createHash } from 'node:crypto';
import { encodeService } from '../policy/policy-api.ts';
import type { WireDocument, WireService, WireSnapshot } from '../policy/policy-api.ts';
import type { PolicyDocument, RegistryService, WorkloadRef } from '../policy/types.ts';
import type { StoredDocument } from './contracts.ts';

/** What the builder needs from the policy model (src/policy). */
export interface SnapshotModel {
  /** Whether the document applies to the workload (its selector, and the mesh-root namespace rule). */
  selects(document: PolicyDocument, workload: WorkloadRef): boolean;
  /** Canonical JSON (sorted keys): what the sidecar receives, and what `digest` is computed over. */
  canonicalJson(document: PolicyDocument): string;
}

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
 * Snapshots per workload. The version is a content digest (sha256, first 16
 * hex characters) of the selected documents' keys and digests and of the
 * registry part, in canonical order: it does not depend on the replica, the
 * time or the order of events, so every replica with the same folder and
 * registry computes the same version and a sidecar failing over sees no
 * change.
 */
export function createSnapshotBuilder(
  source: { documents(): readonly StoredDocument[]; services(): readonly RegistryService[] },
  model: SnapshotModel,
  serverId: string,
  /** The response serializer of the gRPC method, to encode each snapshot once for all its streams. */
  encode?: (message: WireSnapshot) => Buffer,
): SnapshotBuilder {
  let cache = new Map<string, BuiltSnapshot>();
  // Documents are immutable per digest: their wire form is built once across changes.
  let wireDocs = new Map<string, WireDocument>();
  let sortedDocs: readonly StoredDocument[] | undefined;

  const wireDoc = (d: StoredDocument): WireDocument => {
    let w = wireDocs.get(d.digest);
    if (!w) {
      w = { kind: d.document.kind, namespace: d.document.metadata.namespace, name: d.document.metadata.name, json: model.canonicalJson(d.document), digest: d.digest };
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
      sortedDocs ??= [...source.documents()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const documents = sortedDocs.filter((d) => model.selects(d.document, workload)).map(wireDoc);
      const wantedSet = wanted ? new Set(wanted) : undefined;
      const services: WireService[] = source
        .services()
        .filter((s) => !wantedSet || wantedSet.has(`${s.name}.${s.namespace}`))
        .map(encodeService);
      const hash = createHash('sha256');
      hash.update(JSON.stringify(documents.map((d) => [d.kind, d.namespace, d.name, d.digest])));
      hash.update('\n');
      hash.update(JSON.stringify(services));
      const version = hash.digest('hex').slice(0, 16);
      const message: WireSnapshot = { version, documents, services, serverId };
      const built: BuiltSnapshot = { version, message, encoded: encode?.(message) };
      cache.set(key, built);
      return built;
    },
    invalidate() {
      cache = new Map();
      sortedDocs = undefined;
      // Keep wire forms of documents still served; forget the rest.
      const live = new Set(source.documents().map((d) => d.digest));
      const kept = new Map<string, WireDocument>();
      for (const [digest, w] of wireDocs) if (live.has(digest)) kept.set(digest, w);
      wireDocs = kept;
    },
  };
}
