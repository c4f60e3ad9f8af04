/**
 * The policy model shared by the policy server (which validates and serves
 * documents) and the sidecar (which validates again before enforcing, and
 * NACKs what it cannot use). Plain data: no behaviour, no imports.
 */

export const POLICY_API_VERSION = 'meshgate.dev/v1';

export const POLICY_KINDS = ['AuthorizationPolicy', 'RequestAuthentication', 'RateLimitPolicy', 'IPAccessPolicy', 'ValidationPolicy', 'Route', 'Filter'] as const;

export type PolicyKind = (typeof POLICY_KINDS)[number];

/** Which workloads a document applies to. */
interface WorkloadSelector {
  /** Service names in the document's namespace; absent or empty: every workload of the namespace. */
  readonly services?: readonly string[];
}

/** A document after validation: spec shape depends on kind (see src/policy/kinds/). */
export interface PolicyDocument {
  readonly apiVersion: typeof POLICY_API_VERSION;
  readonly kind: PolicyKind;
  readonly metadata: { readonly name: string; readonly namespace: string; readonly labels?: Readonly<Record<string, string>> };
  readonly spec: Readonly<Record<string, unknown>> & { readonly selector?: WorkloadSelector; readonly mode?: 'enforce' | 'shadow' };
}

/** `kind/namespace/name`: how a document is named in errors, the admin API and the audit log. */
export type DocumentKey = string;

/** Where a document came from, for error messages. */
export interface DocumentSource {
  /** File path, or `api` for documents written through the admin API. */
  readonly file: string;
  /** 0-based index of the document within a multi-document YAML file. */
  readonly index: number;
}

/** One problem with one document: `file: document N: field.path: reason`. */
export interface PolicyError {
  readonly source: DocumentSource;
  /** kind/namespace/name when known. */
  readonly document: DocumentKey | undefined;
  /** Dotted field path inside the document, e.g. `spec.rules[2].to.paths[0]`. */
  readonly field: string;
  readonly reason: string;
}

/** The workload a snapshot is compiled for: from the subscriber's certificate. */
export interface WorkloadRef {
  readonly service: string;
  readonly namespace: string;
}

/** The namespace whose documents apply to every workload of the mesh. */
export const MESH_ROOT_NAMESPACE = 'meshgate-system';

export interface RegistryEndpoint {
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
}

export interface RegistryService {
  readonly name: string;
  readonly namespace: string;
  readonly endpoints: readonly RegistryEndpoint[];
  readonly identities: readonly string[];
  readonly external: boolean;
}

/** What one sidecar receives: its documents and the registry part it needs, under one version. */
export interface PolicySnapshot {
  /** Content digest (sha256, hex, first 16 chars) of documents and services. */
  readonly version: string;
  readonly documents: readonly PolicyDocument[];
  readonly services: readonly RegistryService[];
}
