import { describe, expect, it } from 'vitest';
import type { RetryConfig } from '../../../src/config/sidecar-schema.ts';
import { registryServiceSchema, sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import { systemClock } from '../../../src/core/clock.ts';
import { codesOf, isReasonCode, reasonCode } from '../../../src/core/reason-codes.ts';
import type { Cluster } from '../../../src/outbound/cluster.ts';
import { createCluster } from '../../../src/outbound/cluster.ts';
import { classifyAnswer, ENDPOINT_FAILURES, SHARED_REFUSALS } from '../../../src/outbound/peer-answers.ts';
import { createRetryBudget } from '../../../src/outbound/retry-budget.ts';
import { createRetryPlan } from '../../../src/outbound/retry-plan.ts';
import { createReadBuffer } from '../../../src/proxy/socket-reads.ts';
import type { UpstreamTls } from '../../../src/proxy/upstream-pool.ts';

/*
 * A peer sidecar's refusal that every endpoint would give (a policy deny, the
 * shared Redis down) must not eject an endpoint, be retried or spend the retry
 * budget; a failure about that endpoint (no policy, shedding load) counts as
 * before. Nothing here connects: the cluster is told how attempts went.
 */

/** Marks the cluster as reached over mesh mTLS; no connection is made in these tests. */
const MESH_TLS: UpstreamTls = { secureContext: () => undefined, checkServerIdentity: () => undefined };

function cluster(tls: UpstreamTls | undefined): Cluster {
  const config = registryServiceSchema.parse({
    name: 'orders',
    namespace: 'shop',
    endpoints: [{ address: '127.0.0.1:1001' }, { address: '127.0.0.1:1002' }],
    loadBalancer: 'round_robin',
    outlierDetection: { consecutive5xx: 3, maxEjectionPercent: 50 },
  });
  return createCluster(config, { clock: systemClock, random: Math.random, idleTimeoutMs: 1000, readBuffer: createReadBuffer(), tls });
}

/** A route's retries block, parsed with its defaults as the sidecar reads it. */
function retriesOf(retries: Record<string, unknown>): RetryConfig {
  const config = sidecarConfigSchema.parse({
    workload: { service: 'caller' },
    inbound: { app: 'http://127.0.0.1:1' },
    mtls: { mode: 'DISABLE' },
    services: [{ name: 'orders', endpoints: [{ address: '127.0.0.1:1' }], routes: [{ retries }] }],
  });
  return config.services[0]!.routes[0]!.retries!;
}

/** Up to `n` answers with this head from the first endpoint (fewer once it is out); returns whether it is ejected. */
function answer(c: Cluster, n: number, status: number, headers: Record<string, string>): boolean {
  const first = c.endpoints()[0]!;
  for (let i = 0; i < n && first.ejectedUntil === 0; i++) {
    const target = c.pick(
      'http1',
      undefined,
      new Set(
        c
          .endpoints()
          .filter((ep) => ep !== first)
          .map((ep) => ep.address),
      ),
    )!;
    expect(target.label).toBe(first.address);
    target.done({ kind: 'response', status, headers });
  }
  return first.ejectedUntil > 0;
}

describe('peer answers', () => {
  it('classifies every reason code meshgate can answer with, exactly once', () => {
    for (const code of codesOf('data')) {
      expect([SHARED_REFUSALS.has(code), ENDPOINT_FAILURES.has(code)], code).toContain(true);
      expect(SHARED_REFUSALS.has(code) && ENDPOINT_FAILURES.has(code), code).toBe(false);
    }
    for (const code of ENDPOINT_FAILURES) expect(isReasonCode('data', code) && reasonCode(code).http, code).toBeGreaterThanOrEqual(500);
  });

  it('believes the reason header only from a peer sidecar, and only for codes it knows', () => {
    expect(classifyAnswer('ratelimit.unavailable', true)).toBe('shared-refusal');
    expect(classifyAnswer('authz.denied', true)).toBe('shared-refusal');
    expect(classifyAnswer('sidecar.overloaded', true)).toBe('endpoint-failure');
    expect(classifyAnswer('policy.unavailable', true)).toBe('endpoint-failure');
    expect(classifyAnswer('ratelimit.unavailable', false)).toBe('by-status');
    expect(classifyAnswer('some.future_code', true)).toBe('by-status');
    expect(classifyAnswer(undefined, true)).toBe('by-status');
  });

  it('five 503 ratelimit.unavailable from a peer sidecar eject nobody; five 503 policy.unavailable eject it', () => {
    const c = cluster(MESH_TLS);
    expect(answer(c, 5, 503, { 'x-meshgate-reason': 'ratelimit.unavailable' })).toBe(false);
    expect(answer(c, 5, 503, { 'x-meshgate-reason': 'policy.unavailable' })).toBe(true);
  });

  it('a shared refusal neither counts as a failure nor clears the failures counted before it', () => {
    const c = cluster(MESH_TLS);
    expect(answer(c, 2, 502, {})).toBe(false);
    expect(answer(c, 4, 503, { 'x-meshgate-reason': 'ratelimit.unavailable' })).toBe(false);
    expect(answer(c, 1, 500, {})).toBe(true);
  });

  it('a gRPC refusal about the endpoint (HTTP 200, grpc-status 14) counts as its failure', () => {
    const c = cluster(MESH_TLS);
    expect(answer(c, 3, 200, { 'grpc-status': '14', 'x-meshgate-reason': 'sidecar.overloaded' })).toBe(true);
  });

  it('from a plaintext upstream the header is anyone’s: 503s eject whatever reason they claim', () => {
    const c = cluster(undefined);
    expect(answer(c, 3, 503, { 'x-meshgate-reason': 'ratelimit.unavailable' })).toBe(true);
  });

  it('a shared refusal is not retried and spends no retry budget; an endpoint failure is retried', () => {
    const c = cluster(MESH_TLS);
    const budget = createRetryBudget({ percent: 100, minConcurrency: 1 });
    const retryConfig = retriesOf({ attempts: 2, retryOn: ['5xx', 'unavailable'] });
    const plan = (isGrpc: boolean) => createRetryPlan(retryConfig, { method: 'GET', isGrpc, routeTimeoutMs: 1000, classify: c.classify }, budget, () => 1, Math.random)!;

    expect(plan(false).shouldRetryResponse(503, { 'x-meshgate-reason': 'ratelimit.unavailable' })).toBe(false);
    expect(plan(false).shouldRetryResponse(403, { 'x-meshgate-reason': 'authz.denied' })).toBe(false);
    expect(plan(true).shouldRetryResponse(200, { 'grpc-status': '14', 'x-meshgate-reason': 'ratelimit.unavailable' })).toBe(false);
    expect(budget.inFlight()).toBe(0);

    expect(plan(false).shouldRetryResponse(503, { 'x-meshgate-reason': 'sidecar.overloaded' })).toBe(true);
    expect(plan(true).shouldRetryResponse(200, { 'grpc-status': '14', 'x-meshgate-reason': 'policy.unavailable' })).toBe(true);
    expect(plan(false).shouldRetryResponse(503, {})).toBe(true);
  });
});
