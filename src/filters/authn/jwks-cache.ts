import type { Dispatcher } from 'undici';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { fetchJson } from './http-json.ts';
import type { KeySource, VerificationKey } from './jwks-keys.ts';
import { keysFor, parseJwks } from './jwks-keys.ts';

export interface JwksTimings {
  /** Age after which the next lookup refreshes the set in the background (the cached set keeps serving). */
  readonly refreshIntervalMs: number;
  /** After a failed fetch, no new attempt for this long (calls use the last good set, or get 503 without one). */
  readonly retryAfterFailureMs: number;
  /** An unknown `kid` refetches the set at most once per this interval: a flood of made-up kids cannot hammer the IdP. */
  readonly unknownKidRefetchMs: number;
  /** Per fetch, connect to last byte. */
  readonly timeoutMs: number;
  /** Larger documents are refused. */
  readonly maxBytes: number;
}

export const DEFAULT_JWKS_TIMINGS: JwksTimings = Object.freeze({
  refreshIntervalMs: 600_000,
  retryAfterFailureMs: 5_000,
  unknownKidRefetchMs: 30_000,
  timeoutMs: 5_000,
  maxBytes: 512 * 1024,
});

export interface JwksCacheDeps {
  readonly clock: Clock;
  readonly timings: JwksTimings;
  readonly dispatcher?: Dispatcher;
  readonly logger?: Logger;
}

export interface JwksCacheStats {
  readonly uri: string;
  readonly keys: number;
  /** When the set in use was fetched (ms since the epoch), if ever. */
  readonly fetchedAt: number | undefined;
  readonly fetches: number;
  readonly failures: number;
  /** Failures since the last success: > 0 means the sidecar runs on a stale set (or none). */
  readonly failingFor: number;
  readonly lastError: string | undefined;
}

export interface JwksCache extends KeySource {
  stats(): JwksCacheStats;
}

/**
 * A remote JWKS, fetched with undici on first use and cached. Invariant:
 * `keys` only ever holds a set that parsed with at least one usable key, so a
 * failed or garbled refresh keeps the last good set (logged as a warning and
 * visible in `stats()`); with no set at all, lookups are `unavailable` and the
 * filter fails closed. Refreshes are lazy: a lookup on a set older than the
 * refresh interval starts one in the background and is answered from the
 * cached set, so no call waits on the IdP once a set is loaded — except an
 * unknown `kid`, which waits for one rate-limited refetch (key rotation).
 * Concurrent lookups share one fetch. The token's `jku`/`x5u` never reach
 * here: the URI comes from policy only.
 */
export function createJwksCache(uri: string, deps: JwksCacheDeps): JwksCache {
  const { clock, timings } = deps;
  const logger = deps.logger?.child({ component: 'authn', jwksUri: uri });
  let keys: readonly VerificationKey[] | undefined;
  let fetchedAt: number | undefined;
  let lastFailureAt = Number.NEGATIVE_INFINITY;
  let lastKidRefetchAt = Number.NEGATIVE_INFINITY;
  let inflight: Promise<void> | undefined;
  let fetches = 0;
  let failures = 0;
  let failingFor = 0;
  let lastError: string | undefined;

  const mayAttempt = (): boolean => clock.now() - lastFailureAt >= timings.retryAfterFailureMs;

  const refresh = (): Promise<void> => {
    inflight ??= (async () => {
      fetches++;
      const result = await fetchJwks(uri, deps.dispatcher, timings);
      if (typeof result === 'string') {
        failures++;
        failingFor++;
        lastFailureAt = clock.now();
        lastError = result;
        if (keys) logger?.warn({ error: result, failingFor, keptKeys: keys.length }, 'JWKS refresh failed; keeping the last good key set');
        else logger?.error({ error: result, failingFor }, 'JWKS fetch failed and no key set is cached: tokens of this issuer are refused (503)');
        return;
      }
      if (failingFor > 0) logger?.info({ keys: result.length, after: failingFor }, 'JWKS fetched again');
      keys = result;
      fetchedAt = clock.now();
      failingFor = 0;
      lastError = undefined;
    })().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };

  return {
    async lookup(kid, alg) {
      if (!keys) {
        if (inflight) await inflight;
        else if (mayAttempt()) await refresh();
        if (!keys) return 'unavailable';
      } else if (!inflight && clock.now() - fetchedAt! >= timings.refreshIntervalMs && mayAttempt()) {
        void refresh();
      }
      const found = keysFor(keys, kid, alg);
      if (found.length > 0) return found;
      // Unknown kid: maybe the IdP rotated. One refetch per interval, shared by every caller that asks meanwhile.
      if (inflight) {
        await inflight;
      } else if (clock.now() - lastKidRefetchAt >= timings.unknownKidRefetchMs && mayAttempt()) {
        lastKidRefetchAt = clock.now();
        await refresh();
      } else {
        return failingFor > 0 ? 'unavailable' : found;
      }
      const again = keysFor(keys, kid, alg);
      // No key, and the IdP did not answer: maybe a rotation we cannot see yet. Retryable, not a bad token.
      return again.length === 0 && failingFor > 0 ? 'unavailable' : again;
    },
    stats: () => ({ uri, keys: keys?.length ?? 0, fetchedAt, fetches, failures, failingFor, lastError }),
  };
}

/** One GET of the key set; a problem string on any failure (never throws). */
async function fetchJwks(uri: string, dispatcher: Dispatcher | undefined, timings: JwksTimings): Promise<readonly VerificationKey[] | string> {
  const res = await fetchJson(uri, {
    method: 'GET',
    headers: { accept: 'application/json, application/jwk-set+json' },
    timeoutMs: timings.timeoutMs,
    maxBytes: timings.maxBytes,
    dispatcher,
  });
  return res.ok ? parseJwks(res.json) : res.problem;
}
