import type { Dispatcher } from 'undici';
import { runBackgroundLoop } from '../core/background-loop.ts';
import { sleep as defaultSleep } from '../core/backoff.ts';
import type { UpstreamEndpoint } from './endpoint.ts';

/** Resolves true when the endpoint passed; may reject, which counts as a failure. */
export type HealthProbe = (ep: UpstreamEndpoint, path: string, signal: AbortSignal) => Promise<boolean>;

export interface HealthCheckOptions {
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
}

export interface HealthCheckerDeps {
  /** Rejects or resolves early when the signal aborts; tests pass one that resolves at once. */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface HealthChecker {
  /** Probes every endpoint each interval until `signal` aborts; never rejects. */
  run(signal: AbortSignal): Promise<void>;
}

interface Streak {
  passes: number;
  failures: number;
}

/**
 * Active health checks. Each round probes all endpoints concurrently, so one
 * slow endpoint delays nobody else's verdict by more than the probe timeout.
 * An endpoint flips only after a streak (thresholds), so one lost probe does
 * not take it out and one lucky probe does not bring it back.
 */
export function createHealthChecker(opts: HealthCheckOptions, probe: HealthProbe, endpoints: readonly UpstreamEndpoint[], deps: HealthCheckerDeps = {}): HealthChecker {
  const sleep = deps.sleep ?? defaultSleep;
  const streaks = new Map<UpstreamEndpoint, Streak>(endpoints.map((ep) => [ep, { passes: 0, failures: 0 }]));

  const probeOnce = async (ep: UpstreamEndpoint, signal: AbortSignal): Promise<boolean> => {
    try {
      return await probe(ep, opts.path, AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs)]));
    } catch {
      return false;
    }
  };

  const apply = (ep: UpstreamEndpoint, passed: boolean): void => {
    // Endpoints can join the array between rounds (registry pushes): start their streak on first sight.
    let s = streaks.get(ep);
    if (!s) {
      s = { passes: 0, failures: 0 };
      streaks.set(ep, s);
    }
    if (passed) {
      s.passes++;
      s.failures = 0;
      if (!ep.healthy && s.passes >= opts.healthyThreshold) ep.healthy = true;
    } else {
      s.failures++;
      s.passes = 0;
      if (ep.healthy && s.failures >= opts.unhealthyThreshold) ep.healthy = false;
    }
  };

  return {
    run: (signal) =>
      runBackgroundLoop(
        async () => {
          const round = [...endpoints];
          const results = await Promise.all(round.map((ep) => probeOnce(ep, signal)));
          // Probes cut short by shutdown say nothing about the endpoints.
          if (!signal.aborted) round.forEach((ep, i) => apply(ep, results[i]!));
          return opts.intervalMs;
        },
        {
          signal,
          // A failed round (a bug, never a failed probe) keeps the last verdicts and tries again at the same pace.
          backoff: { baseMs: opts.intervalMs, maxMs: opts.intervalMs },
          random: () => 0,
          onError: () => undefined,
          wait: sleep,
          ref: true,
        },
      ),
  };
}

export interface HttpProbeOptions {
  /** undici headers/body timeout, a backstop to the checker's abort signal. */
  readonly timeoutMs?: number;
  /** Connection pool to probe through; undici's global one by default. */
  readonly dispatcher?: Dispatcher;
}

/** HTTP GET probe: 2xx passes; any other status, a timeout or a connect error fails. */
export function createHttpProbe(opts: HttpProbeOptions = {}): HealthProbe {
  const timeout = opts.timeoutMs ?? 1_000;
  return async (ep, path, signal) => {
    try {
      // Loaded with the first probe: only services with a health check need undici for it.
      const { request } = await import('undici');
      const res = await request(`http://${ep.address}${path}`, {
        method: 'GET',
        signal,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        ...(opts.dispatcher !== undefined ? { dispatcher: opts.dispatcher } : {}),
      });
      // Always drain so the keep-alive connection returns to the pool.
      await res.body.dump({ limit: 65_536, signal });
      return res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      return false;
    }
  };
}
