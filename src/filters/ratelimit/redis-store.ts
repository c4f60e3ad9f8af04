import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { BucketShape, TakeResult } from './gcra.ts';

/*
 * Global buckets in Redis, shared by every sidecar: one key per bucket holding
 * its GCRA TAT (gcra.ts) in microseconds. The script reads Redis' own clock
 * (TIME), so sidecars with skewed clocks still count against one timeline,
 * and takes the token atomically. Keys expire when the bucket is full again,
 * so idle callers cost Redis nothing. One key per call keeps it Cluster-safe.
 *
 * Failure is an answer, not an exception: a call that cannot be counted in
 * `timeout` gets `undefined` and the rule's failureMode decides (fail closed
 * by default). Commands are never queued while disconnected.
 */

// Microseconds keep sub-millisecond intervals exact; %.0f keeps all 16 digits (tostring would print 1.8e+15).
const GCRA_SCRIPT = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval
local allow_at = nxt - burst * interval
if now < allow_at then
  return {0, string.format('%.0f', allow_at - now), string.format('%.0f', tat - now), 0}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, '0', string.format('%.0f', nxt - now), math.floor((now - allow_at) / interval)}
`;

export interface RedisStoreOptions {
  readonly url: string;
  readonly username?: string | undefined;
  readonly passwordFile?: string | undefined;
  /** Milliseconds a take may last before it counts as failed. */
  readonly timeout: number;
  readonly keyPrefix: string;
}

export interface RedisStoreEvents {
  /** The connection went from working to failing (or never worked): once per outage, not per retry. */
  unavailable?(error: Error): void;
  /** Connected (again). */
  available?(): void;
}

export interface RateLimitStore {
  /** Takes one token; undefined when Redis could not answer in time. */
  take(key: string, shape: BucketShape): Promise<TakeResult | undefined>;
  /** `ready` when commands are being sent, otherwise ioredis' connection state. */
  status(): string;
  /** Resolves true once connected, false after `timeoutMs` without a connection (the sidecar starts anyway). */
  whenReady(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

type GcraReply = [number, string, string, number];
type RedisWithGcra = Redis & { meshgateGcra(key: string, intervalUs: number, burst: number): Promise<GcraReply> };

/** The URL without credentials, for logs and /config_dump. */
export function redactRedisUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/)[^@/]*@/, '$1');
}

export function createRedisStore(opts: RedisStoreOptions, events: RedisStoreEvents = {}): RateLimitStore {
  const password = opts.passwordFile ? readFileSync(opts.passwordFile, 'utf8').trim() : undefined;
  const redis = new Redis(opts.url, {
    ...(opts.username ? { username: opts.username } : {}),
    ...(password ? { password } : {}),
    keyPrefix: opts.keyPrefix,
    commandTimeout: opts.timeout,
    connectTimeout: Math.max(1000, opts.timeout),
    enableOfflineQueue: false, // a call waits for no reconnect: its failureMode answers at once
    maxRetriesPerRequest: 0,
    enableAutoPipelining: true, // concurrent calls share one write: the hot path's round trips batch up
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    lazyConnect: false,
  }) as RedisWithGcra;
  redis.defineCommand('meshgateGcra', { numberOfKeys: 1, lua: GCRA_SCRIPT });

  let healthy: boolean | undefined;
  redis.on('ready', () => {
    if (healthy !== true) events.available?.();
    healthy = true;
  });
  // Without a listener ioredis prints every reconnect error; one event per outage is enough.
  redis.on('error', (error: Error) => {
    if (healthy !== false) events.unavailable?.(error);
    healthy = false;
  });

  return {
    async take(key, shape) {
      try {
        const [allowed, retryUs, resetUs, remaining] = await redis.meshgateGcra(key, Math.max(1, Math.round(shape.intervalMs * 1000)), shape.burst);
        if (healthy !== true) {
          healthy = true;
          events.available?.();
        }
        return { allowed: allowed === 1, remaining, retryAfterMs: Number(retryUs) / 1000, resetMs: Number(resetUs) / 1000 };
      } catch (error) {
        if (healthy !== false) {
          // e.g. timed out on a live connection: one line per outage too.
          events.unavailable?.(error as Error);
          healthy = false;
        }
        return undefined;
      }
    },
    status: () => redis.status,
    whenReady(timeoutMs) {
      if (redis.status === 'ready') return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = (ok: boolean): void => {
          clearTimeout(timer);
          redis.off('ready', onReady);
          resolve(ok);
        };
        const onReady = (): void => done(true);
        const timer = setTimeout(() => done(false), timeoutMs);
        redis.on('ready', onReady);
      });
    },
    async close() {
      redis.disconnect();
    },
  };
}
