import * as grpc from '@grpc/grpc-js';
import type { Span } from '@opentelemetry/api';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { CaConfig } from '../config/ca-schema.ts';
import type { Clock } from '../core/clock.ts';
import { reasonCode } from '../core/reason-codes.ts';
import type { SignRequest, SignResponse, TrustBundle, TrustBundleRequest } from '../identity/ca-api.ts';
import { CA_REASON_METADATA_KEY } from '../identity/ca-api.ts';
import { grpcPeerIdentity } from '../identity/grpc-peer-identity.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { HeaderCarrier, Tracing } from '../telemetry/tracing.ts';
import type { AuditLog } from './audit-log.ts';
import type { CaMaterial } from './ca-material.ts';
import type { CaMetrics } from './ca-metrics.ts';
import type { CaRefusal } from './ca-reasons.ts';
import { refuse } from './ca-reasons.ts';
import { checkCsr } from './csr-check.ts';
import type { LeafSigner } from './leaf-signer.ts';
import type { RateLimiter } from './rate-limiter.ts';
import type { TokenVerifier } from './token-verifier.ts';
import type { WorkloadIdentity } from './workload-claims.ts';

export interface CaServiceDeps {
  readonly config: Pick<CaConfig, 'trustDomain' | 'leaf'>;
  readonly material: CaMaterial;
  readonly verifier: TokenVerifier;
  readonly signer: LeafSigner;
  readonly limiter: RateLimiter;
  readonly audit: AuditLog;
  readonly metrics: CaMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Spans of Sign calls (server span, and the signing itself inside it); none when absent or off. */
  readonly tracing?: Tracing;
}

export interface CaService extends grpc.UntypedServiceImplementation {
  sign: grpc.handleUnaryCall<SignRequest, SignResponse>;
  getTrustBundle: grpc.handleUnaryCall<TrustBundleRequest, TrustBundle>;
}

type Proof = (WorkloadIdentity & { readonly ok: true; readonly proof: 'token' | 'certificate' }) | CaRefusal;

/**
 * The CA API handlers. Sign runs, in this order: proof of identity (a bearer
 * token, or else a verified client certificate for renewal) -> per-identity
 * rate limit (after authentication, so nobody can spend another identity's
 * budget) -> CSR check -> sign -> audit -> reply. Every refusal is a value
 * until `reply`, the one place that maps it to a gRPC status; every outcome
 * is audited before the caller hears of it.
 */
export function createCaService(deps: CaServiceDeps): CaService {
  const { config, material, verifier, signer, limiter, audit, metrics, logger, clock } = deps;
  const tracer = deps.tracing?.tracer;

  async function prove(call: grpc.ServerUnaryCall<SignRequest, SignResponse>): Promise<Proof> {
    const values = call.metadata.get('authorization');
    if (values.length > 1) return refuse('ca.token_malformed', 'more than one authorization header');
    if (values.length === 1) {
      const match = /^Bearer ([^\s]+)$/i.exec(String(values[0]));
      if (!match) return refuse('ca.token_malformed', 'authorization is not "Bearer <token>"');
      const verified = await verifier.verify(match[1]!);
      return verified.ok ? { ...verified, proof: 'token' } : verified;
    }
    const peer = grpcPeerIdentity(call.getAuthContext?.(), config.trustDomain, clock);
    if (!peer) return refuse('ca.token_missing', 'no bearer token, and no client certificate of this trust domain that verifies');
    return peer.ok ? { ...peer, proof: 'certificate' } : refuse('ca.peer_certificate', peer.message);
  }

  async function sign(call: grpc.ServerUnaryCall<SignRequest, SignResponse>, span: Span | undefined): Promise<SignResponse | (CaRefusal & { spiffeId?: string })> {
    const proof = await prove(call);
    if (!proof.ok) return proof;
    const { spiffeId } = proof;
    if (!limiter.take(spiffeId)) return { ...refuse('ca.rate_limited', `rate limit for ${spiffeId} exceeded; retry later`), spiffeId };
    const csr = await checkCsr(call.request.csrPem ?? '', config.leaf.keyTypes);
    if (!csr.ok) return { ...csr, spiffeId };
    const requested = Number(call.request.ttlSeconds ?? 0) * 1000;
    const ttlMs = requested > 0 ? Math.min(requested, config.leaf.maxTtl) : config.leaf.ttl;
    let leaf;
    const signing =
      span &&
      tracer?.startSpan('sign certificate', { kind: SpanKind.INTERNAL, attributes: { 'meshgate.spiffe_id': spiffeId, 'meshgate.ca.key_type': csr.keyType } }, trace.setSpan(ROOT_CONTEXT, span));
    try {
      leaf = await signer.sign({ publicKey: csr.publicKey, keyType: csr.keyType, spiffeId, ttlMs });
      signing?.setAttribute('meshgate.ca.serial', leaf.serial);
    } catch (err) {
      signing?.setStatus({ code: SpanStatusCode.ERROR, message: 'signing failed' });
      logger.error({ err, spiffeId }, 'signing failed');
      return { ...refuse('ca.internal', 'signing failed'), spiffeId };
    } finally {
      signing?.end();
    }
    try {
      await audit.record({
        event: 'issued',
        spiffeId,
        serial: leaf.serial,
        notAfter: leaf.notAfter.toISOString(),
        proof: proof.proof,
        caller: call.getPeer(),
        keyType: csr.keyType,
      });
    } catch (err) {
      // An issuance nobody can trace is worse than none: the certificate is dropped.
      logger.error({ err, spiffeId, serial: leaf.serial }, 'audit write failed; certificate withheld');
      return { ...refuse('ca.internal', 'audit write failed; nothing issued'), spiffeId };
    }
    logger.debug({ spiffeId, serial: leaf.serial, notAfter: leaf.notAfter.toISOString(), proof: proof.proof }, 'certificate issued');
    return {
      certChainPem: [leaf.pem, ...material.chainPem],
      trustBundlePem: [...material.rootsPem],
      spiffeId,
      serial: leaf.serial,
      notAfterUnix: Math.floor(leaf.notAfter.getTime() / 1000),
    };
  }

  async function reply(
    call: grpc.ServerUnaryCall<SignRequest, SignResponse>,
    outcome: SignResponse | (CaRefusal & { spiffeId?: string }),
    started: number,
    callback: grpc.sendUnaryData<SignResponse>,
    span: Span | undefined,
  ): Promise<void> {
    const seconds = (clock.monotonic() - started) / 1000;
    if (!('ok' in outcome)) {
      metrics.signings.inc({ result: 'issued' });
      metrics.signingDuration.observe({ result: 'issued' }, seconds);
      endSignSpan(span, 'issued', outcome.spiffeId, grpc.status.OK);
      callback(null, outcome);
      return;
    }
    const result = outcome.reason.slice('ca.'.length);
    endSignSpan(span, result, outcome.spiffeId, reasonCode(outcome.reason).grpc);
    metrics.signings.inc({ result });
    metrics.signingDuration.observe({ result }, seconds);
    const caller = call.getPeer();
    logger.info({ reason: outcome.reason, spiffeId: outcome.spiffeId, caller }, `signing refused: ${outcome.message}`);
    try {
      await audit.record({ event: 'refused', reason: outcome.reason, message: outcome.message, caller, ...(outcome.spiffeId ? { spiffeId: outcome.spiffeId } : {}) });
    } catch (err) {
      logger.error({ err }, 'audit write failed');
    }
    const trailers = new grpc.Metadata();
    trailers.set(CA_REASON_METADATA_KEY, outcome.reason);
    callback({ code: reasonCode(outcome.reason).grpc, details: `${outcome.message} (${outcome.reason})`, metadata: trailers });
  }

  /** A server span per Sign call; its parent is the caller's trace context (gRPC metadata), if it sent one. */
  function startSignSpan(call: grpc.ServerUnaryCall<SignRequest, SignResponse>): Span | undefined {
    if (!tracer || !deps.tracing) return undefined;
    try {
      return tracer.startSpan(
        'meshgate.ca.v1.CertificateAuthority/Sign',
        { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.service': 'meshgate.ca.v1.CertificateAuthority', 'rpc.method': 'Sign' } },
        deps.tracing.extract(call.metadata.getMap() as HeaderCarrier),
      );
    } catch {
      return undefined;
    }
  }

  function endSignSpan(span: Span | undefined, result: string, spiffeId: string | undefined, code: grpc.status): void {
    if (!span) return;
    try {
      span.setAttributes({ 'meshgate.ca.result': result, 'rpc.grpc.status_code': code, ...(spiffeId ? { 'meshgate.spiffe_id': spiffeId } : {}) });
      if (code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: `ca.${result}` });
      span.end();
    } catch {
      // Tracing never fails a signing.
    }
  }

  return {
    sign(call, callback) {
      const started = clock.monotonic();
      const span = startSignSpan(call);
      sign(call, span)
        .catch((err: unknown) => {
          logger.error({ err }, 'sign failed');
          return refuse('ca.internal', 'internal error');
        })
        .then((outcome) => reply(call, outcome, started, callback, span))
        .catch((err: unknown) => logger.error({ err }, 'sign reply failed'));
    },
    getTrustBundle(_call, callback) {
      callback(null, { trustDomain: config.trustDomain, rootsPem: [...material.rootsPem] });
    },
  };
}
