import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { GrpcApi } from '../core/grpc-api.ts';
import { loadGrpcApi } from '../core/grpc-api.ts';

/*
 * The meshgate CA API (proto/meshgate/ca/v1/ca.proto), loaded at run time:
 * no generated code to keep in step. Both the CA (server) and the sidecar
 * (client) go through here.
 *
 * Field casing: the loader runs with keepCase: false, so proto fields appear
 * in lowerCamelCase on both sides (`csr_pem` -> `csrPem`, `not_after_unix` ->
 * `notAfterUnix`). int64 values arrive as JavaScript numbers (seconds since
 * the epoch fit easily), and `defaults: true` makes absent scalars and
 * repeated fields arrive as '' / 0 / [].
 */

const CA_PROTO_FILE = fileURLToPath(new URL('../../proto/meshgate/ca/v1/ca.proto', import.meta.url));
const CA_SERVICE_NAME = 'meshgate.ca.v1.CertificateAuthority';
/**
 * Trailing metadata of a refused Sign call: the stable reason, e.g.
 * `ca.token_expired`, `ca.peer_certificate`, `ca.rate_limited` (README, "Workload identity (CA)").
 */
export const CA_REASON_METADATA_KEY = 'meshgate-reason';

export interface SignRequest {
  /** PEM PKCS#10 CSR. Only its public key is used: the identity comes from the caller's proof. */
  readonly csrPem: string;
  /** Requested lifetime; 0 or absent means the CA's default. Capped by the CA's maxTtl. */
  readonly ttlSeconds?: number;
}

export interface SignResponse {
  /** Leaf first, then intermediates; never the root. */
  readonly certChainPem: string[];
  /** Every root in force (old and new during a root rotation). */
  readonly trustBundlePem: string[];
  readonly spiffeId: string;
  /** Hex serial of the leaf, upper case as node:crypto prints it. */
  readonly serial: string;
  readonly notAfterUnix: number;
}

export type TrustBundleRequest = Record<string, never>;

export interface TrustBundle {
  readonly trustDomain: string;
  readonly rootsPem: string[];
}

export type CaApi = GrpcApi;

export function loadCaApi(): CaApi {
  return loadGrpcApi(CA_PROTO_FILE, 'meshgate.ca.v1', 'CertificateAuthority');
}

/** `authorization: Bearer <token>`: how a bootstrap token travels to the CA. */
export function bearerMetadata(token: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/** The CA's reason for a refused call (from the trailers), or undefined. */
export function caRefusalReason(err: unknown): string | undefined {
  const value = (err as Partial<grpc.ServiceError> | undefined)?.metadata?.get(CA_REASON_METADATA_KEY)[0];
  return value === undefined ? undefined : String(value);
}

export interface CaClient {
  /**
   * Rejects with a grpc.ServiceError: UNAUTHENTICATED (bad or missing token,
   * no valid client certificate), INVALID_ARGUMENT (bad CSR),
   * RESOURCE_EXHAUSTED (rate limit), UNAVAILABLE / DEADLINE_EXCEEDED (CA away).
   * Without a token in `metadata`, the CA renews for the identity of the
   * client certificate in `credentials`, if any.
   */
  sign(req: SignRequest, metadata?: grpc.Metadata, deadlineMs?: number): Promise<SignResponse>;
  getTrustBundle(deadlineMs?: number): Promise<TrustBundle>;
  close(): void;
}

const DEFAULT_DEADLINE_MS = 10_000;

/**
 * A promise-based CA client. `credentials` is normally
 * grpc.credentials.createSsl(trustBundlePem, [keyPem, certChainPem]): the roots
 * verify the CA's serving certificate; the optional key and chain prove the
 * current identity for renewal. Channel credentials are fixed per client, so
 * make a new client after each rotation.
 */
export function createCaClient(address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions): CaClient {
  const { Client } = loadCaApi();
  const client = new Client(address, credentials, options ?? {});
  const deadline = (ms: number | undefined): grpc.CallOptions => ({ deadline: Date.now() + (ms ?? DEFAULT_DEADLINE_MS) });
  type Unary<Req, Res> = (req: Req, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, res?: Res) => void) => void;
  const sign = (client as unknown as { sign: Unary<SignRequest, SignResponse> }).sign.bind(client);
  const getTrustBundle = (client as unknown as { getTrustBundle: Unary<TrustBundleRequest, TrustBundle> }).getTrustBundle.bind(client);
  return {
    sign(req, metadata, deadlineMs) {
      return new Promise((resolve, reject) => {
        sign(req, metadata ?? new grpc.Metadata(), deadline(deadlineMs), (err, res) => (err ? reject(err) : resolve(res!)));
      });
    },
    getTrustBundle(deadlineMs) {
      return new Promise((resolve, reject) => {
        getTrustBundle({}, new grpc.Metadata(), deadline(deadlineMs), (err, res) => (err ? reject(err) : resolve(res!)));
      });
    },
    close() {
      client.close();
    },
  };
}
