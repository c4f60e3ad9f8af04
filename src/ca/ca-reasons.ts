import { GrpcStatus } from '../core/reason-codes.ts';

/**
 * Every reason the CA refuses a signing, with its gRPC status. The reason is
 * stable (audit records and logs carry it, operators alert on it); the
 * message the caller sees is free text. One table, so the status of a
 * refusal is decided in one place.
 */
export const CA_REASONS = {
  'ca.token_missing': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'No bearer token and no valid client certificate of this trust domain.' },
  'ca.token_malformed': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token is not a compact JWS.' },
  'ca.token_algorithm': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `alg` is not in tokens.algorithms (`none` and HS* never are)." },
  'ca.token_signature': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token signature does not verify with any configured key.' },
  'ca.token_expired': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `exp` is past (beyond tokens.clockSkew)." },
  'ca.token_not_yet_valid': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `nbf` or `iat` is in the future (beyond tokens.clockSkew)." },
  'ca.token_issuer': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `iss` is not in tokens.issuers." },
  'ca.token_audience': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `aud` names none of tokens.audiences." },
  'ca.token_claims': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token lacks a required claim or names no valid namespace and service account.' },
  'ca.token_keys_unavailable': { grpc: GrpcStatus.UNAVAILABLE, description: 'The JWKS at tokens.jwksUri could not be fetched.' },
  'ca.peer_certificate': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'Renewal refused: the client certificate is expired or not a workload certificate of this trust domain.' },
  'ca.csr_malformed': { grpc: GrpcStatus.INVALID_ARGUMENT, description: 'The CSR is not a PEM PKCS#10 request.' },
  'ca.csr_signature': { grpc: GrpcStatus.INVALID_ARGUMENT, description: "The CSR's signature does not verify with its own public key." },
  'ca.csr_key_type': { grpc: GrpcStatus.INVALID_ARGUMENT, description: "The CSR's key type is not in leaf.keyTypes (EC P-256, RSA of 2048 to 8192 bits)." },
  'ca.rate_limited': { grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'The identity exceeded rateLimit.perIdentity.' },
  'ca.internal': { grpc: GrpcStatus.INTERNAL, description: 'Signing or audit failed inside the CA; nothing was issued.' },
} as const;

export type CaReason = keyof typeof CA_REASONS;

/** A refusal as a value: the per-call path returns these instead of throwing. */
export interface CaRefusal {
  readonly ok: false;
  readonly reason: CaReason;
  /** For the caller and the log; never contains a token or key. */
  readonly message: string;
}

export function refuse(reason: CaReason, message: string): CaRefusal {
  return { ok: false, reason, message };
}
