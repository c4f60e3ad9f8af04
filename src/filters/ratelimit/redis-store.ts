import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { BucketShape, TakeResult } from './gcra.ts';

/*
 * Global buckets in Redis, shared by every sidecar: one key per bucket holding
 * its GCRA TAT (gcra.ts) in microseconds. The script reads Redis' own clock
 * (TIME), so sidecars with skewed clocks still count against one timeline,
 * and takes the token atomically. Keys expire when the bucket is full again,
 * so idle callers cost Redis nothing. The takes of one event-loop turn share
 * one script call (their keys may hash to different slots: a standalone
 * Redis, not Redis Cluster).
 *
 * Failure is an answer, not an exception: a call that cannot be counted in
 * `timeout` gets `undefined` and the rule's failureMode decides (fail closed
 * by default). Commands are never queued while disconnected.
 */

// One call per bucket in KEYS, its interval (µs) and burst in ARGV[2i-1], ARGV[2i]; four values
// per bucket back. Microseconds keep sub-millisecond intervals exact; %.0f keeps all 16 digits
// (tostring would print 1.8e+15). allow_at = tat - (burst - 1) * interval, as in gcra.ts.
const GCRA_SCRIPT = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local allow_at = tat - (burst - 1) * interval
  if now < allow_at then
    out[#out + 1] = 0
    out[#out + 1] = string.format('%.0f', allow_at - now)
    out[#out + 1] = string.format('%.0f', tat - now)
    out[#out + 1] = 0
  else
    local nxt = tat + interval
    redis.call('SET', KEYS[i], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
    out[#out + 1] = 1
    out[#out + 1] = '0'
    out[#out + 1] = string.format('%.0f', nxt - now)
    out[#out + 1] = math.floor((now - allow_at) / interval)
  end
end
return out
`;

/**
 * Most buckets in one script call. Takes of one event-loop turn go to Redis as
 * one command: per-command client work (ioredis builds, encodes and settles
 * each) was most of a global rule's cost, not the round trip.
 */
const MAX_BATCH = 128;

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

type RedisWithGcra = Redis & { meshgateGcra(numberOfKeys: number, ...keysThenArgs: (string | number)[]): Promise<(number | string)[]> };

interface PendingTake {
  readonly key: string;
  readonly intervalUs: number;
  readonly burst: number;
  readonly resolve: (result: TakeResult | undefined) => void;
}

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
  redis.defineCommand('meshgateGcra', { lua: GCRA_SCRIPT }); // the number of keys comes first in each call

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

  const succeeded = (): void => {
    if (healthy !== true) {
      healthy = true;
      events.available?.();
    }
  };
  const failed = (error: Error): void => {
    if (healthy !== false) {
      // e.g. timed out on a live connection: one line per outage too.
      events.unavailable?.(error);
      healthy = false;
    }
  };

  const send = async (batch: readonly PendingTake[]): Promise<void> => {
    const args: (string | number)[] = batch.map((p) => p.key);
    for (const p of batch) args.push(p.intervalUs, p.burst);
    try {
      const reply = await redis.meshgateGcra(batch.length, ...args);
      succeeded();
      batch.forEach((p, i) => {
        const o = i * 4;
        p.resolve({ allowed: reply[o] === 1, retryAfterMs: Number(reply[o + 1]) / 1000, resetMs: Number(reply[o + 2]) / 1000, remaining: Number(reply[o + 3]) });
      });
    } catch (error) {
      failed(error as Error);
      for (const p of batch) p.resolve(undefined);
    }
  };

  let queue: PendingTake[] = [];
  const flush = (): void => {
    const batch = queue;
    queue = [];
    for (let i = 0; i < batch.length; i += MAX_BATCH) void send(batch.slice(i, i + MAX_BATCH));
  };

  return {
    take(key, shape) {
      return new Promise((resolve) => {
        // setImmediate runs after the poll phase: every call parsed from this turn's reads joins the batch.
        if (queue.length === 0) setImmediate(flush);
        queue.push({ key, intervalUs: Math.max(1, Math.round(shape.intervalMs * 1000)), burst: shape.burst, resolve });
      });
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
