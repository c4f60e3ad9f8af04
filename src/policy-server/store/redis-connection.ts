import type { Redis } from 'ioredis';
import type { Clock } from '../../core/clock.ts';
import type { RedisConnectionOptions } from '../../core/redis-client.ts';
import { createRedisClient } from '../../core/redis-client.ts';
import { redactRedisUrl } from '../../core/redis-url.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { PolicyServerMetrics } from '../policy-server-metrics.ts';

export interface PolicyStoreConnectionOptions extends RedisConnectionOptions {
  readonly keyPrefix: string;
  /** Milliseconds a command may take before Redis counts as unreachable. */
  readonly timeout: number;
}

export interface PolicyStoreConnection {
  /** Commands. Keys and channels are prefixed by the callers with `prefix`. */
  readonly redis: Redis;
  readonly prefix: string;
  /** True while both connections are ready and no command has failed since. */
  up(): boolean;
  /** While down: since when (ms since the epoch) and the last error. */
  problem(): { readonly since: number; readonly error: string } | undefined;
  /** Runs `fn` against Redis; a failure marks the store down (counted under `op`) and rethrows. */
  run<T>(op: string, fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** Messages on `channel` (subscribed now and again after every reconnect). */
  subscribe(channel: string, onMessage: (message: string) => void): void;
  /** Called after each transition to up (first connect included), with channels subscribed: read everything again. */
  onUp(listener: () => Promise<void> | void): void;
  /** Resolves once up; rejects when `signal` aborts. */
  whenUp(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** Reconnect and probe interval while Redis is away: fixed, so an outage ends within this of Redis answering. */
const RETRY_MS = 250;

/**
 * The policy server's two connections to Redis: one for commands, one in
 * subscriber mode (pub/sub needs its own). The store is "up" when both are
 * ready and the last command answered; any failure makes it "down" until a
 * reconnect or a PING succeeds, which then runs every onUp listener (each
 * reads its state in full: messages published meanwhile were lost).
 * Subscriptions are made again by hand before onUp, so no message published
 * after a full read can be missed.
 */
export function createPolicyStoreConnection(opts: PolicyStoreConnectionOptions, deps: { logger: Logger; metrics: PolicyServerMetrics; clock: Clock }): PolicyStoreConnection {
  const log = deps.logger.child({ component: 'policy-store', redis: redactRedisUrl(opts.url) });
  const tuning = {
    commandTimeout: opts.timeout,
    connectTimeout: Math.max(1000, opts.timeout),
    enableOfflineQueue: false, // a command while Redis is away fails at once: the caller keeps its last state
    maxRetriesPerRequest: 0,
    retryStrategy: () => RETRY_MS,
    autoResubscribe: false, // done in resubscribe(), before the full reads
  };
  const redis = createRedisClient(opts, tuning);
  const sub = createRedisClient(opts, tuning);
  const handlers = new Map<string, (message: string) => void>();
  const upListeners: Array<() => Promise<void> | void> = [];
  const upWaiters = new Set<() => void>();
  let isUp = false;
  let down: { since: number; error: string } | undefined = { since: deps.clock.now(), error: 'not connected yet' };
  let closed = false;
  let everUp = false;
  let probeTimer: NodeJS.Timeout | undefined;
  let raising: Promise<void> | undefined;
  deps.metrics.storeConnected.set(0);

  const markDown = (op: string, err: Error): void => {
    if (closed) return;
    deps.metrics.storeErrors.inc({ op });
    if (!isUp && down) {
      down = { ...down, error: err.message };
      return;
    }
    isUp = false;
    down = { since: deps.clock.now(), error: err.message };
    deps.metrics.storeConnected.set(0);
    log.warn({ op, err: err.message }, 'policy store (Redis) unreachable: serving the last merged registry and documents; admin writes refused until it is back');
  };

  /** Both connections ready: subscribe, PING, then run the listeners; one attempt at a time. */
  const raise = (): Promise<void> => {
    if (raising || isUp || closed) return raising ?? Promise.resolve();
    raising = (async () => {
      try {
        if (redis.status !== 'ready' || sub.status !== 'ready') return;
        if (handlers.size > 0) await sub.subscribe(...handlers.keys());
        await redis.ping();
        if (closed) return;
        isUp = true;
        const was = down;
        down = undefined;
        deps.metrics.storeConnected.set(1);
        for (const listener of upListeners) await listener();
        for (const wake of [...upWaiters]) wake();
        upWaiters.clear();
        if (everUp) log.info({ downForMs: deps.clock.now() - (was?.since ?? 0) }, 'policy store (Redis) reachable again: state read again');
        else log.info('policy store (Redis) connected');
        everUp = true;
      } catch (err) {
        isUp = false;
        markDown('connect', err as Error);
      }
    })().finally(() => {
      raising = undefined;
    });
    return raising;
  };

  for (const client of [redis, sub]) {
    client.on('ready', () => void raise());
    client.on('error', (err: Error) => markDown('connect', err));
    client.on('close', () => {
      if (!closed) markDown('connect', new Error('connection closed'));
    });
  }
  sub.on('message', (channel: string, message: string) => handlers.get(channel)?.(message));
  // A frozen Redis keeps its connections open: a failed command marks the store down, and a PING brings it back.
  probeTimer = setInterval(() => {
    if (!isUp && !raising) void raise();
  }, RETRY_MS);
  probeTimer.unref();

  return {
    redis,
    prefix: opts.keyPrefix,
    up: () => isUp,
    problem: () => down,
    async run(op, fn) {
      try {
        return await fn(redis);
      } catch (err) {
        markDown(op, err as Error);
        throw err;
      }
    },
    subscribe(channel, onMessage) {
      handlers.set(channel, onMessage);
      if (sub.status === 'ready') void sub.subscribe(channel).catch((err: Error) => markDown('connect', err));
    },
    onUp: (listener) => void upListeners.push(listener),
    whenUp(signal) {
      if (isUp) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const abort = (): void => {
          upWaiters.delete(wake);
          reject(signal.reason as Error);
        };
        const wake = (): void => {
          signal.removeEventListener('abort', abort);
          resolve();
        };
        upWaiters.add(wake);
        signal.addEventListener('abort', abort, { once: true });
      });
    },
    async close() {
      closed = true;
      clearInterval(probeTimer);
      await raising?.catch(() => undefined);
      redis.disconnect();
      sub.disconnect();
    },
  };
}
