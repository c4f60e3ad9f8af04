import type { EndpointConfig, ServiceConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { AttemptResult, RetryPlan, UpstreamTarget } from '../proxy/upstream-call.ts';
import type { UpstreamPool, UpstreamProtocol, UpstreamTls } from '../proxy/upstream-pool.ts';
import { createUpstreamPool } from '../proxy/upstream-pool.ts';
import { createBalancer } from './balancer.ts';
import type { UpstreamEndpoint } from './endpoint.ts';
import { createEndpoint } from './endpoint.ts';
import { createHealthChecker, createHttpProbe } from './health-checker.ts';
import { createOutlierDetector } from './outlier-detector.ts';
import type { AnswerKind } from './peer-answers.ts';
import { classifyAnswer, reasonOf } from './peer-answers.ts';
import type { RetryBudget } from './retry-budget.ts';
import { createRetryBudget } from './retry-budget.ts';
import { createConnectRetryPlan } from './retry-plan.ts';

export interface ClusterEvents {
  onEject?(service: string, endpoint: string, untilMs: number): void;
  onReturn?(service: string, endpoint: string): void;
}

/** One endpoint picked for one attempt, with its labels: the outbound stack tells deprecated versions by them. */
export interface ClusterTarget extends UpstreamTarget {
  readonly labels: Readonly<Record<string, string>>;
}

/** Every endpoint of one service, with its balancer, circuit breaker and retry budget. */
export interface Cluster {
  readonly key: string;
  readonly config: ServiceConfig;
  readonly budget: RetryBudget;
  /** The retries of its routes that set none: connect failures only, within `budget` (./retry-plan.ts). */
  readonly connectRetry: RetryPlan;
  /** Calls in flight to this service (all endpoints). */
  active(): number;
  /** Whether its endpoints are peer sidecars reached over mesh mTLS (not plain apps or external hosts). */
  readonly peerSidecars: boolean;
  /** How a response head from one of its endpoints counts: a peer sidecar's x-meshgate-reason is believed only over mesh mTLS. */
  classify(headers: Readonly<Record<string, string | string[] | undefined>>): AnswerKind;
  /** Picks an endpoint for one attempt, or undefined when none is left to try. */
  pick(protocol: UpstreamProtocol, subset: Readonly<Record<string, string>> | undefined, tried: ReadonlySet<string>): ClusterTarget | undefined;
  endpoints(): readonly UpstreamEndpoint[];
  /** Replaces the endpoint set (registry push); unchanged endpoints keep their connections and state. */
  setEndpoints(endpoints: readonly EndpointConfig[]): void;
  /** New connections for later calls (after a certificate rotation); in-flight calls are untouched. */
  refreshConnections(): void;
  start(signal: AbortSignal): void;
  /** Waits for calls in flight; `force` ends them (a drain whose time ran out must not hang on an upstream). */
  close(opts?: { readonly force?: boolean }): Promise<void>;
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

function inSubset(ep: UpstreamEndpoint, subset: Readonly<Record<string, string>> | undefined): boolean {
  if (!subset) return true;
  for (const [key, value] of Object.entries(subset)) if (ep.labels[key] !== value) return false;
  return true;
}

export interface ClusterDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly events?: ClusterEvents;
  readonly idleTimeoutMs: number;
  /** The sidecar's one buffer upstream sockets read into (src/proxy/socket-reads.ts). */
  readonly readBuffer: Buffer;
  /** Mutual TLS to this service's endpoints; undefined for plaintext. */
  readonly tls?: UpstreamTls;
}

export function createCluster(config: ServiceConfig, deps: ClusterDeps): Cluster {
  const key = `${config.name}.${config.namespace}`;
  // Invariant: `endpoints` is mutated in place (the health checker holds the same array) and
  // every endpoint in it has exactly one pool in `pools`.
  const endpoints: UpstreamEndpoint[] = [];
  const pools = new Map<UpstreamEndpoint, UpstreamPool>();
  const poolFor = (address: string): UpstreamPool =>
    createUpstreamPool(
      address,
      {
        connectTimeoutMs: config.connectTimeout,
        maxConnections: config.maxConnectionsPerEndpoint,
        keepAliveTimeoutMs: Math.min(deps.idleTimeoutMs, 30_000),
        readBuffer: deps.readBuffer,
      },
      deps.tls,
    );
  for (const e of config.endpoints) {
    const ep = createEndpoint(e.address, e.weight, e.labels);
    endpoints.push(ep);
    pools.set(ep, poolFor(ep.address));
  }
  const balancer = createBalancer(config.loadBalancer, deps.random);
  const outliers = createOutlierDetector(
    {
      consecutive5xx: config.outlierDetection.consecutive5xx,
      consecutiveConnectFailures: config.outlierDetection.consecutiveConnectFailures,
      baseEjectionMs: config.outlierDetection.baseEjection,
      maxEjectionPercent: config.outlierDetection.maxEjectionPercent,
      onEject: (ep, until) => deps.events?.onEject?.(key, ep.address, until),
      onReturn: (ep) => deps.events?.onReturn?.(key, ep.address),
    },
    deps.clock,
  );
  outliers.eligible(endpoints);
  const budget = createRetryBudget(config.retryBudget);
  let active = 0;
  // Endpoints reached over mesh mTLS are peer sidecars, whose reason header an app cannot forge.
  const peerSidecars = deps.tls !== undefined;
  const classify = (headers: Readonly<Record<string, string | string[] | undefined>>): AnswerKind => classifyAnswer(reasonOf(headers), peerSidecars);

  const record = (ep: UpstreamEndpoint, result: AttemptResult): void => {
    ep.activeRequests--;
    active--;
    if (result.kind === 'response') {
      const kind = classify(result.headers);
      // A refusal every endpoint would give says nothing about this one: neither a failure nor a success.
      if (kind === 'shared-refusal') return;
      if (kind === 'endpoint-failure' || result.status >= 500) outliers.record5xx(ep);
      else {
        outliers.recordSuccess(ep);
        ep.lastSuccessAt = deps.clock.monotonic();
      }
      return;
    }
    if (result.failure === 'connect-failure' || result.failure === 'reset' || result.failure === 'identity') outliers.recordConnectFailure(ep);
    // An endpoint that answers garbage is as broken as one answering 5xx.
    else if (result.failure === 'timeout' || result.failure === 'protocol-error') outliers.record5xx(ep);
  };

  return {
    key,
    config,
    budget,
    connectRetry: createConnectRetryPlan(budget, () => active, deps.random),
    active: () => active,
    peerSidecars,
    classify,
    endpoints: () => endpoints,
    pick(protocol, subset, tried) {
      const pool = subset ? endpoints.filter((ep) => inSubset(ep, subset)) : endpoints;
      if (pool.length === 0) return undefined;
      const candidates = outliers.eligible(pool);
      const untried = candidates.filter((ep) => !tried.has(ep.address));
      // A retry goes to another endpoint when one exists, else the same one again.
      const choices = untried.length > 0 ? untried : candidates;
      if (choices.length === 0) return undefined;
      const ep = balancer.pick(choices);
      ep.activeRequests++;
      active++;
      const upstream = pools.get(ep)!;
      return { dispatcher: upstream.dispatcher(protocol), label: ep.address, labels: ep.labels, done: (result) => record(ep, result) };
    },
    refreshConnections() {
      for (const pool of pools.values()) pool.refresh();
    },
    setEndpoints(next) {
      const wanted = new Map(next.map((e) => [e.address, e]));
      // Endpoints that stay keep their pools, counters and outlier state.
      for (let i = endpoints.length - 1; i >= 0; i--) {
        const ep = endpoints[i]!;
        const want = wanted.get(ep.address);
        if (want && want.weight === ep.weight && sameLabels(want.labels, ep.labels)) {
          wanted.delete(ep.address);
          continue;
        }
        endpoints.splice(i, 1);
        outliers.forget(ep);
        const pool = pools.get(ep)!;
        pools.delete(ep);
        // In-flight calls finish on the old connections.
        void pool.close().catch(() => {});
      }
      for (const e of wanted.values()) {
        const ep = createEndpoint(e.address, e.weight, e.labels);
        endpoints.push(ep);
        pools.set(ep, poolFor(ep.address));
      }
      outliers.eligible(endpoints);
    },
    start(signal) {
      if (!config.healthCheck) return;
      const hc = config.healthCheck;
      const checker = createHealthChecker(
        { path: hc.path, intervalMs: hc.interval, timeoutMs: hc.timeout, unhealthyThreshold: hc.unhealthyThreshold, healthyThreshold: hc.healthyThreshold },
        createHttpProbe({ timeoutMs: hc.timeout }),
        endpoints,
      );
      void checker.run(signal);
    },
    async close(opts) {
      await Promise.all([...pools.values()].map((p) => (opts?.force ? p.destroy() : p.close())));
    },
  };
}
