import type { RateLimitConfig } from '../config/sidecar-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { createLogGate } from '../core/log-gate.ts';
import { redactRedisUrl } from '../core/redis-url.ts';
import { createLocalBuckets } from '../filters/ratelimit/local-buckets.ts';
import type { RateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import { createRateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import type { RateLimitStore } from '../filters/ratelimit/redis-store.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { SidecarMetrics } from '../telemetry/metrics.ts';

/** How long start-up waits for Redis before opening listeners anyway (global rules then use their failureMode). */
const REDIS_START_WAIT_MS = 2_000;

export interface SidecarRateLimiting {
  readonly runtime: RateLimitRuntime;
  /** For /config_dump: the Redis URL without credentials and the connection state. */
  describe(): unknown;
  close(): Promise<void>;
}

/**
 * The rate-limit state of one sidecar, created once: the local bucket table
 * and the Redis connection outlive every policy snapshot.
 */
export async function startRateLimiting(
  config: RateLimitConfig,
  deps: {
    metrics: SidecarMetrics;
    clock: Clock;
    random: Random;
    logger: Logger;
    /** Endpoints of this sidecar's own service in the registry, for failureMode local with localFallback split. */
    replicas?: () => number;
    /** Worker processes of this sidecar (config `workers`), each with its own buckets: local limits are divided among them. */
    workers?: number | undefined;
  },
): Promise<SidecarRateLimiting> {
  const replicas = (): number => Math.max(1, deps.replicas?.() ?? 1);
  const logger = deps.logger.child({ component: 'ratelimit' });
  const evictionWarnings = createLogGate(deps.clock, 60_000);
  const local = createLocalBuckets(config.maxLocalBuckets, {
    evicted: () => {
      deps.metrics.rateLimitBucketEvictions.inc();
      if (evictionWarnings.pass() === undefined) return;
      logger.warn({ maxLocalBuckets: config.maxLocalBuckets }, 'rate-limit bucket table full: buckets dropped early (see meshgate_ratelimit_bucket_evictions_total; raise rateLimit.maxLocalBuckets)');
    },
  });
  const redisConfig = config.redis;
  let store: RateLimitStore | undefined;
  if (redisConfig) {
    const url = redactRedisUrl(redisConfig.url);
    // Loaded only with a Redis configured: the client (ioredis) costs ~18 ms of start-up and heap a sidecar without global limits never uses.
    const { createRedisStore } = await import('../filters/ratelimit/redis-store.ts');
    store = createRedisStore(redisConfig, {
      available: () => logger.info({ redis: url }, 'rate-limit store connected'),
      // replicas: what failureMode local with localFallback split divides each limit by.
      unavailable: (error) => logger.warn({ redis: url, err: error.message, replicas: replicas() }, 'rate-limit store unavailable: global rules apply their failureMode until it is back'),
    });
    if (!(await store.whenReady(REDIS_START_WAIT_MS))) logger.warn({ redis: url }, 'rate-limit store not reachable at start; listeners open anyway');
  }
  return {
    runtime: createRateLimitRuntime({
      local,
      store,
      clock: deps.clock,
      random: deps.random,
      metrics: deps.metrics,
      logger,
      replicas,
      workers: deps.workers,
      maxQueuedCalls: config.maxQueuedCalls,
    }),
    describe: () => ({
      localBuckets: local.size,
      ...(deps.workers !== undefined && deps.workers > 1 ? { localShare: `1/${deps.workers} of each local limit (one of ${deps.workers} workers)` } : {}),
      replicas: replicas(), // what a split local fallback divides by
      redis: redisConfig ? { url: redactRedisUrl(redisConfig.url), status: store?.status() } : null,
    }),
    close: async () => store?.close(),
  };
}
