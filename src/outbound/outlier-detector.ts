import type { Clock } from '../core/clock.ts';
import type { UpstreamEndpoint } from './endpoint.ts';

export interface OutlierDetectorOptions {
  readonly consecutive5xx: number;
  readonly consecutiveConnectFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionPercent: number;
  /** For logging; `untilMs` is on the Clock's monotonic scale. */
  readonly onEject?: (ep: UpstreamEndpoint, untilMs: number) => void;
  readonly onReturn?: (ep: UpstreamEndpoint) => void;
}

export interface OutlierDetector {
  recordSuccess(ep: UpstreamEndpoint): void;
  record5xx(ep: UpstreamEndpoint): void;
  /** A connect failure, or a reset before the response completed. */
  recordConnectFailure(ep: UpstreamEndpoint): void;
  /** Returns an endpoint whose ejection has expired (lazily, on this call). */
  isEjected(ep: UpstreamEndpoint): boolean;
  /** Endpoints to balance over: healthy and not ejected, with panic fallbacks (see below). */
  eligible(endpoints: readonly UpstreamEndpoint[]): UpstreamEndpoint[];
  /** Drops the state of an endpoint the registry removed. */
  forget(ep: UpstreamEndpoint): void;
  /** Ejections since start, for metrics. */
  ejections(): number;
  /** Calls to eligible() answered in panic mode since start, for metrics. */
  panics(): number;
}

interface EndpointState {
  consecutive5xx: number;
  consecutiveConnectFailures: number;
  timesEjected: number;
}

// 2^4: a flapping endpoint stays out at most 16 base ejections, then gets another chance.
const MAX_EJECTION_DOUBLINGS = 4;

/**
 * Passive health (Envoy outlier detection). One detector per cluster: the
 * max-ejection share is computed over every endpoint the detector has seen,
 * and eligible() sees the whole cluster before each pick.
 */
export function createOutlierDetector(opts: OutlierDetectorOptions, clock: Clock): OutlierDetector {
  const states = new Map<UpstreamEndpoint, EndpointState>();
  let ejectionCount = 0;
  let panicCount = 0;

  const stateOf = (ep: UpstreamEndpoint): EndpointState => {
    let s = states.get(ep);
    if (s === undefined) {
      s = { consecutive5xx: 0, consecutiveConnectFailures: 0, timesEjected: 0 };
      states.set(ep, s);
    }
    return s;
  };

  const isEjected = (ep: UpstreamEndpoint): boolean => {
    if (ep.ejectedUntil === 0) return false;
    if (clock.monotonic() < ep.ejectedUntil) return true;
    ep.ejectedUntil = 0;
    opts.onReturn?.(ep);
    return false;
  };

  // Envoy: eject only if the ejected share, this one included, stays within the cap.
  const ejectionAllowed = (): boolean => {
    let ejected = 0;
    for (const ep of states.keys()) if (isEjected(ep)) ejected++;
    return (ejected + 1) * 100 <= opts.maxEjectionPercent * states.size;
  };

  const maybeEject = (ep: UpstreamEndpoint, s: EndpointState): void => {
    if (s.consecutive5xx < opts.consecutive5xx && s.consecutiveConnectFailures < opts.consecutiveConnectFailures) return;
    // Counters restart either way, so a refused ejection is retried after another full run of failures.
    s.consecutive5xx = 0;
    s.consecutiveConnectFailures = 0;
    if (!ejectionAllowed()) return;
    const until = clock.monotonic() + opts.baseEjectionMs * 2 ** Math.min(s.timesEjected, MAX_EJECTION_DOUBLINGS);
    s.timesEjected++;
    ejectionCount++;
    ep.ejectedUntil = until;
    opts.onEject?.(ep, until);
  };

  return {
    recordSuccess(ep) {
      const s = stateOf(ep);
      s.consecutive5xx = 0;
      s.consecutiveConnectFailures = 0;
    },
    record5xx(ep) {
      const s = stateOf(ep);
      // Answers from calls started before the ejection must not extend it.
      if (isEjected(ep)) return;
      s.consecutive5xx++;
      maybeEject(ep, s);
    },
    recordConnectFailure(ep) {
      const s = stateOf(ep);
      if (isEjected(ep)) return;
      s.consecutiveConnectFailures++;
      maybeEject(ep, s);
    },
    isEjected,
    eligible(endpoints) {
      for (const ep of endpoints) stateOf(ep);
      const eligible = endpoints.filter((ep) => ep.healthy && !isEjected(ep));
      if (eligible.length > 0) return eligible;
      // Panic mode, as Envoy: with nothing left, spreading load over suspect
      // endpoints beats failing every call locally.
      panicCount++;
      const healthy = endpoints.filter((ep) => ep.healthy);
      return healthy.length > 0 ? healthy : [...endpoints];
    },
    forget(ep) {
      states.delete(ep);
    },
    ejections: () => ejectionCount,
    panics: () => panicCount,
  };
}
