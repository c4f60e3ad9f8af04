/**
 * One upstream endpoint as the outbound stack sees it. The counters are owned
 * by the cluster that holds the endpoint; balancers only read them.
 */
export interface UpstreamEndpoint {
  /** `host:port`, unique within a cluster. */
  readonly address: string;
  readonly weight: number;
  readonly labels: Readonly<Record<string, string>>;
  /** Requests in flight to this endpoint right now. */
  activeRequests: number;
  /** False while active health checks say the endpoint is down. */
  healthy: boolean;
  /** Monotonic ms until which outlier detection keeps the endpoint out; 0 when in. */
  ejectedUntil: number;
  /** Monotonic ms of its last answer below 500; 0 before any. A registry update that drops every endpoint keeps recent ones (src/sidecar/registry-keeper.ts). */
  lastSuccessAt: number;
}

/** Picks one endpoint for the next attempt. */
export interface Balancer {
  /**
   * @param candidates endpoints currently eligible (healthy, not ejected), never empty
   * @param exclude endpoints already tried by this call, avoided when another exists
   */
  pick(candidates: readonly UpstreamEndpoint[], exclude?: ReadonlySet<UpstreamEndpoint>): UpstreamEndpoint;
}

/** The candidates this call has not tried yet; all of them when it tried every one (retrying one beats failing the call). */
export function untriedEndpoints(candidates: readonly UpstreamEndpoint[], exclude: ReadonlySet<UpstreamEndpoint> | undefined): readonly UpstreamEndpoint[] {
  if (exclude === undefined || exclude.size === 0) return candidates;
  const untried = candidates.filter((ep) => !exclude.has(ep));
  return untried.length > 0 ? untried : candidates;
}

export function createEndpoint(address: string, weight = 1, labels: Record<string, string> = {}): UpstreamEndpoint {
  return { address, weight, labels: Object.freeze({ ...labels }), activeRequests: 0, healthy: true, ejectedUntil: 0, lastSuccessAt: 0 };
}
