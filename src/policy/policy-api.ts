import type { PeerCertificate } from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { GrpcApi } from '../core/grpc-api.ts';
import { loadGrpcApi } from '../core/grpc-api.ts';
import { formatSpiffeId, spiffeIdOfCertificate } from '../core/spiffe-id.ts';
import { filterJavaScript } from './filter-sources.ts';
import type { PolicyDocument, RegistryService } from './types.ts';
import { MESH_ROOT_NAMESPACE } from './types.ts';

/*
 * The meshgate policy API (proto/meshgate/policy/v1/policy.proto), loaded at
 * run time like the CA API (src/identity/ca-api.ts): no generated code. The
 * policy server and the sidecar's subscriber both go through here.
 *
 * Field casing: keepCase: false, so proto fields appear in lowerCamelCase
 * (`sidecar_id` -> `sidecarId`, `current_version` -> `currentVersion`).
 * `defaults: true` makes absent scalars, maps and repeated fields arrive as
 * '' / 0 / false / {} / []. `oneofs: true` adds a virtual `message` field to
 * a received SubscribeRequest naming the member that is set ('hello' | 'ack').
 */

const POLICY_PROTO_FILE = fileURLToPath(new URL('../../proto/meshgate/policy/v1/policy.proto', import.meta.url));
const POLICY_SERVICE_NAME = 'meshgate.policy.v1.PolicyDiscovery';

/** The policy server is a mesh workload: spiffe://<td>/ns/meshgate-system/sa/policy-server. */
const POLICY_SERVER_NAMESPACE = MESH_ROOT_NAMESPACE;
const POLICY_SERVER_SERVICE_ACCOUNT = 'policy-server';
/** TLS server name (SNI and :authority) a client sends; the certificate is checked by SPIFFE ID, not by this name. */
const POLICY_SERVER_NAME = 'meshgate-policy-server';

export function policyServerSpiffeId(trustDomain: string, serviceAccount: string = POLICY_SERVER_SERVICE_ACCOUNT): string {
  return formatSpiffeId({ trustDomain, namespace: POLICY_SERVER_NAMESPACE, serviceAccount });
}

export interface Hello {
  /** Unique per sidecar process, e.g. `${hostname}-${pid}-${startTime}`. */
  readonly sidecarId: string;
  /** host:port of the inbound listener, registered while the stream is open; '' registers nothing. */
  readonly address?: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** The version enforced now (memory or disk copy); '' when none. */
  readonly currentVersion?: string;
  /** `name.namespace` of the services the workload calls; empty: the whole registry. */
  readonly destinations?: readonly string[];
}

export interface DocumentError {
  /** kind/namespace/name. */
  readonly document: string;
  readonly field: string;
  readonly reason: string;
}

interface Ack {
  readonly version: string;
  /** false is a NACK: the sidecar keeps enforcing its previous version. */
  readonly accepted: boolean;
  readonly errors?: readonly DocumentError[];
}

/** What a client writes; exactly one member set. */
export type SubscribeRequest = { readonly hello: Hello; readonly ack?: undefined } | { readonly ack: Ack; readonly hello?: undefined };

/** A SubscribeRequest as the server receives it (defaults filled in). */
export interface ReceivedSubscribeRequest {
  readonly message?: 'hello' | 'ack';
  readonly hello?: Required<Omit<Hello, 'labels' | 'destinations'>> & { labels: Record<string, string>; destinations: string[] };
  readonly ack?: Required<Omit<Ack, 'errors'>> & { errors: DocumentError[] };
}

export interface WireDocument {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  /** The validated document (apiVersion, kind, metadata, spec) as canonical JSON. */
  readonly json: string;
  /** Content digest of `json`. */
  readonly digest: string;
  /** Filter documents: the source with its types stripped by the server (src/sandbox/typescript.ts); '' or absent otherwise. */
  readonly javascript?: string;
}

/** A document as the server sends it: its canonical `json` and `digest`, and a Filter's source as JavaScript (filterJavaScript says why). */
export function wireDocumentOf(document: PolicyDocument, json: string, digest: string): WireDocument {
  const javascript = filterJavaScript(document);
  return { kind: document.kind, namespace: document.metadata.namespace, name: document.metadata.name, json, digest, ...(javascript ? { javascript } : {}) };
}

/** A registry service on the wire: the same fields as in the policy model. */
export type WireService = RegistryService;

/** PolicySnapshot on the wire. */
export interface WireSnapshot {
  readonly version: string;
  readonly documents: readonly WireDocument[];
  readonly services: readonly WireService[];
  readonly serverId: string;
  /** The replica is in its registry warm-up: endpoints missing from `services` may still be up (absent from older servers: false). */
  readonly registryWarming?: boolean;
}

export type PolicyApi = GrpcApi;

export function loadPolicyApi(): PolicyApi {
  return loadGrpcApi(POLICY_PROTO_FILE, 'meshgate.policy.v1', 'PolicyDiscovery');
}

/** The TLS material a sidecar holds (a WorkloadCredentials from src/identity/cert-manager.ts fits). */
export interface ClientIdentity {
  readonly keyPem: string;
  /** Leaf first, then intermediates. */
  readonly chainPem: readonly string[];
  readonly trustBundlePem: readonly string[];
}

/**
 * Mutual TLS towards the policy server. The server's certificate is a
 * workload certificate with a URI SAN only (no DNS name), so instead of a
 * hostname check the client requires the server's SPIFFE ID
 * (policyServerSpiffeId(trustDomain) unless the deployment says otherwise).
 * Channel credentials are fixed per channel: after a rotation, make a new
 * client (open streams keep their connection).
 */
export function policyChannelCredentials(identity: ClientIdentity, expectedServerId: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(identity.trustBundlePem.join('')), Buffer.from(identity.keyPem), Buffer.from(identity.chainPem.join('')), {
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const id = spiffeIdOfCertificate(cert.subjectaltname);
      if (id === expectedServerId) return undefined;
      return new Error(`policy server presented ${id ?? 'no SPIFFE ID'}, expected ${expectedServerId}`);
    },
  });
}

/**
 * Channel options for a long-lived subscription: the TLS name is fixed (an IP
 * address is not a valid SNI name, and the identity check above does not use
 * it), and keepalive pings notice a dead server or path within ~40 s so the
 * client can fail over instead of waiting on a silent TCP connection.
 */
const POLICY_CLIENT_OPTIONS: grpc.ClientOptions = Object.freeze({
  'grpc.ssl_target_name_override': POLICY_SERVER_NAME,
  'grpc.default_authority': POLICY_SERVER_NAME,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Snapshots carry every document of the workload and its registry.
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
});

export type PolicyStream = grpc.ClientDuplexStream<SubscribeRequest, WireSnapshot>;

export interface PolicyClient {
  /**
   * Opens the stream. Write a Hello first (helloRequest), then an Ack
   * (ackRequest) for every snapshot received. The stream ends with an error
   * status: UNAUTHENTICATED (no usable client certificate), INVALID_ARGUMENT
   * (first message not a Hello, bad Hello), DEADLINE_EXCEEDED (no Hello in
   * time), UNAVAILABLE (server away or shutting down: reconnect elsewhere).
   */
  subscribe(metadata?: grpc.Metadata): PolicyStream;
  close(): void;
}

export function createPolicyClient(address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions): PolicyClient {
  const { Client } = loadPolicyApi();
  const client = new Client(address, credentials, { ...POLICY_CLIENT_OPTIONS, ...options });
  const subscribe = (client as unknown as { subscribe: (metadata: grpc.Metadata) => PolicyStream }).subscribe.bind(client);
  return {
    subscribe: (metadata) => subscribe(metadata ?? new grpc.Metadata()),
    close: () => client.close(),
  };
}

export const helloRequest = (hello: Hello): SubscribeRequest => ({ hello });

export const ackRequest = (version: string, accepted: boolean, errors: readonly DocumentError[] = []): SubscribeRequest => ({
  ack: { version, accepted, errors },
});

export interface DecodedSnapshot {
  readonly version: string;
  readonly serverId: string;
  /**
   * Each document as the server validated it. Still untrusted input for the
   * sidecar: validate again before enforcing and NACK what does not pass.
   */
  readonly documents: ReadonlyArray<{ readonly key: string; readonly digest: string; readonly document: PolicyDocument | undefined; readonly error?: string }>;
  readonly services: readonly RegistryService[];
}

/** Wire snapshot -> model types. A document whose JSON does not parse keeps its key and gets `error`. */
export function decodeSnapshot(wire: WireSnapshot): DecodedSnapshot {
  return {
    version: wire.version,
    serverId: wire.serverId,
    documents: wire.documents.map((d) => {
      const key = `${d.kind}/${d.namespace}/${d.name}`;
      try {
        return { key, digest: d.digest, document: JSON.parse(d.json) as PolicyDocument };
      } catch (err) {
        return { key, digest: d.digest, document: undefined, error: `json: ${(err as Error).message}` };
      }
    }),
    services: wire.services.map((s) => ({
      name: s.name,
      namespace: s.namespace,
      endpoints: s.endpoints.map((e) => ({ address: e.address, labels: { ...e.labels }, weight: e.weight })),
      identities: [...s.identities],
      external: s.external,
    })),
  };
}

/** Model -> wire, used by the server. */
export function encodeService(service: RegistryService): WireService {
  return {
    name: service.name,
    namespace: service.namespace,
    endpoints: service.endpoints.map((e) => ({ address: e.address, labels: e.labels, weight: e.weight })),
    identities: service.identities,
    external: service.external,
  };
}
