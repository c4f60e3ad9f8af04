import type { IncomingHttpHeaders } from 'node:http';
import type { RetryConfig } from '../config/sidecar-schema.ts';
import { backoffDelay } from '../core/backoff.ts';
import type { Random } from '../core/clock.ts';
import { GrpcStatus } from '../core/reason-codes.ts';
import type { RetryPlan } from '../proxy/upstream-call.ts';
import type { AnswerKind } from './peer-answers.ts';
import type { RetryBudget } from './retry-budget.ts';

/** RFC 9110 §9.2.2: a repeat has the same effect as one call. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

const GRPC_CONDITIONS: Record<string, number> = {
  unavailable: GrpcStatus.UNAVAILABLE,
  'resource-exhausted': GrpcStatus.RESOURCE_EXHAUSTED,
  cancelled: GrpcStatus.CANCELLED,
  'deadline-exceeded': GrpcStatus.DEADLINE_EXCEEDED,
};

/**
 * Which attempts may be repeated. A connect failure is retried for any method
 * (nothing reached the server). Responses and resets are retried only for
 * idempotent methods, and gRPC calls only on the gRPC statuses listed, since a
 * POST that reached the app may already have had its effect. A peer sidecar's
 * refusal that every endpoint would give (`classify`, peer-answers.ts) is never
 * retried: another endpoint would answer the same, and the budget is kept.
 */
export function createRetryPlan(
  config: RetryConfig,
  call: { method: string; isGrpc: boolean; routeTimeoutMs: number; classify?: (headers: IncomingHttpHeaders) => AnswerKind },
  budget: RetryBudget,
  activeRequests: () => number,
  random: Random,
): RetryPlan | undefined {
  if (config.attempts === 0) return undefined;
  const on = new Set(config.retryOn);
  const idempotent = IDEMPOTENT.has(call.method);
  const grpcStatuses = new Set(config.retryOn.flatMap((c) => (c in GRPC_CONDITIONS ? [GRPC_CONDITIONS[c]!] : [])));
  const statusCodes = new Set(config.statusCodes);
  return {
    attempts: config.attempts,
    perTryTimeoutMs: config.perTryTimeout ?? call.routeTimeoutMs,
    bufferLimit: config.bufferLimit,
    replaysBody: true,
    shouldRetryResponse(status: number, headers: IncomingHttpHeaders) {
      if (call.classify?.(headers) === 'shared-refusal') return false;
      if (call.isGrpc) {
        // Only a trailers-only reply carries grpc-status in the head; anything else is streamed on.
        const grpcStatus = headers['grpc-status'];
        return typeof grpcStatus === 'string' && grpcStatuses.has(Number(grpcStatus));
      }
      if (!idempotent) return false;
      if (on.has('5xx') && status >= 500) return true;
      if (on.has('gateway-error') && (status === 502 || status === 503 || status === 504)) return true;
      return on.has('retriable-status-codes') && statusCodes.has(status);
    },
    shouldRetryFailure(failure) {
      // A refused handshake is a connect failure: no request byte left the sidecar.
      if (failure === 'connect-failure' || failure === 'identity') return on.has('connect-failure');
      if (call.isGrpc || !idempotent) return false;
      if (failure === 'reset') return on.has('reset');
      if (failure === 'timeout') return on.has('5xx') || on.has('gateway-error');
      return false;
    },
    backoffMs: (retry) => backoffDelay(retry - 1, { baseMs: config.backoff.base, maxMs: config.backoff.max }, random),
    acquire: () => budget.tryAcquire(activeRequests()),
    release: () => budget.release(),
  };
}

/** Retries of a route with no `retries` section: connect failures only, up to this many. */
const CONNECT_RETRIES = 2;
const CONNECT_BACKOFF = { baseMs: 25, maxMs: 250 };

/**
 * The plan of a route that sets no retries: a connect failure (a refused or
 * unreachable endpoint, a failed handshake, a peer of the wrong identity) is
 * tried again, on another endpoint when there is one, as Istio does by default. Nothing of the
 * call reached a server, so this is safe for any method; and since no attempt
 * has read the body then, nothing is buffered for a replay: an endpoint gone
 * since the registry last said so (a restarted sidecar's snapshot from disk,
 * a pod that just died) costs a retry, not a 503. `retries: { attempts: 0 }`
 * turns it off. One plan per cluster, shared by its calls.
 */
export function createConnectRetryPlan(budget: RetryBudget, activeRequests: () => number, random: Random): RetryPlan {
  return {
    attempts: CONNECT_RETRIES,
    perTryTimeoutMs: Number.POSITIVE_INFINITY, // no per-try timeout: the route's own covers every attempt
    bufferLimit: 0,
    replaysBody: false,
    shouldRetryResponse: () => false,
    shouldRetryFailure: (failure) => failure === 'connect-failure' || failure === 'identity',
    backoffMs: (retry) => backoffDelay(retry - 1, CONNECT_BACKOFF, random),
    acquire: () => budget.tryAcquire(activeRequests()),
    release: () => budget.release(),
  };
}
