import type { Redis } from 'ioredis';
import { createRedisClient } from '../../core/redis-client.ts';
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
 * by default). The timeout covers the whole exchange with Redis (EVALSHA, and
 * EVAL when Redis lost the script), from the moment the batch leaves, one
 * event-loop turn after its first take. Commands are never queued while
 * disconnected.
 *
 * While Redis is down the store answers `undefined` at once and probes it on
 * a short fixed interval (PROBE_INTERVAL_MS): a reconnect for a closed
 * connection, a PING for one that accepts and answers nothing (a frozen or
 * overloaded Redis). Counting resumes within one interval of Redis answering,
 * and a frozen Redis does not collect a backlog of scripts that would spend
 * tokens when it wakes.
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

/**
 * Time between probes while Redis is down. Fixed, not backing off: an outage
 * must end for the sidecar as soon as Redis answers again (with ioredis'
 * default backoff it ended up to 2 s late). A probe is one connect attempt or
 * one PING on loopback-cheap paths, ten a second per sidecar.
 */
const PROBE_INTERVAL_MS = 100;

export interface RedisStoreOptions {
  readonly url: string;
  readonly username?: string | undefined;
  readonly passwordFile?: string | undefined;
  /** PEM bundle of a private CA for rediss:// (src/core/redis-client.ts). */
  readonly caFile?: string | undefined;
  /** Milliseconds a take may last, from the call to its answer, before it counts as failed. */
  readonly timeout: number;
  readonly keyPrefix: string;
}

export interface RedisStoreEvents {
  /** The store went from working to failing (or never worked): once per outage, not per retry. */
  unavailable?(error: Error): void;
  /** Answering (again). */
  available?(): void;
}

export interface RateLimitStore {
  /** Takes one token; undefined when Redis could not answer in time (at once while it is known to be down). */
  take(key: string, shape: BucketShape): Promise<TakeResult | undefined>;
  /** `ready` when takes are being sent, `unresponsive` when the connection is up but Redis stopped answering, otherwise ioredis' connection state. */
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
  /** The first answer wins: the reply, or undefined at the batch's deadline. */
  settle(result: TakeResult | undefined): void;
}

/** The takes of one event-loop turn, sent together, under one deadline. */
interface Batch {
  readonly takes: PendingTake[];
  /** performance.now() when it left for Redis. */
  sentAt: number;
  unsettled: number;
  deadline: NodeJS.Timeout | undefined;
}

class StoreTimeoutError extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = 'StoreTimeoutError';
  }
}

const NO_ANSWER: Promise<undefined> = Promise.resolve(undefined);

export function createRedisStore(opts: RedisStoreOptions, events: RedisStoreEvents = {}): RateLimitStore {
  const redis = createRedisClient(opts, {
    keyPrefix: opts.keyPrefix,
    // Only to drop commands a frozen Redis never answers from ioredis' queue: the batch deadline
    // below answers the calls, and an ioredis timer would fire before a stalled loop reads the reply.
    commandTimeout: Math.max(1000, 10 * opts.timeout),
    connectTimeout: Math.max(1000, opts.timeout),
    enableOfflineQueue: false, // a call waits for no reconnect: its failureMode answers at once
    maxRetriesPerRequest: 0,
    // The store batches a turn's takes into one command itself; ioredis' autopipelining would only add
    // another loop turn before the write (a stall then counts against the deadline) and a SCRIPT EXISTS
    // round trip per pipeline. Measured in process: 15-17 us CPU per take without it, 17-23 with it.
    enableAutoPipelining: false,
    retryStrategy: () => PROBE_INTERVAL_MS, // reconnect attempts are the probes of a closed connection
    lazyConnect: false,
  }) as RedisWithGcra;
  redis.defineCommand('meshgateGcra', { lua: GCRA_SCRIPT }); // the number of keys comes first in each call

  let healthy: boolean | undefined;
  /** Redis stopped answering on a live connection: takes answer undefined at once until a PING comes back. */
  let unresponsive = false;
  let probeTimer: NodeJS.Timeout | undefined;
  let probeInFlight = false;
  let closed = false;
  /** When Redis last answered anything (performance.now()). */
  let lastAnswerAt = -Infinity;

  const becameAvailable = (): void => {
    unresponsive = false;
    if (probeTimer) clearInterval(probeTimer);
    probeTimer = undefined;
    if (healthy !== true) {
      healthy = true;
      events.available?.();
    }
  };
  const becameUnavailable = (error: Error): void => {
    // One event per outage, whatever the number of failed takes and reconnect attempts.
    if (healthy !== false) {
      healthy = false;
      events.unavailable?.(error);
    }
  };
  redis.on('ready', becameAvailable);
  // Without a listener ioredis prints every reconnect error.
  redis.on('error', becameUnavailable);
  // A connection that ends without an error (Redis shut down, FIN) is an outage too, from this moment.
  redis.on('close', () => {
    if (!closed) becameUnavailable(new Error('connection closed'));
  });

  const probe = (): void => {
    // A closed connection is probed by ioredis' reconnects ('ready' ends the outage).
    if (!unresponsive || probeInFlight || redis.status !== 'ready') return;
    probeInFlight = true;
    const giveUp = setTimeout(() => setImmediate(() => (probeInFlight = false)), opts.timeout);
    redis.ping().then(
      () => {
        clearTimeout(giveUp);
        probeInFlight = false;
        lastAnswerAt = performance.now();
        if (unresponsive && !closed) becameAvailable();
      },
      () => {
        clearTimeout(giveUp);
        probeInFlight = false;
      },
    );
  };
  const stopAnswering = (error: Error): void => {
    becameUnavailable(error);
    if (unresponsive || closed) return;
    unresponsive = true;
    // At once: a sidecar whose event loop stalled took its own lateness for Redis' and is back in one round trip.
    probe();
    probeTimer = setInterval(probe, PROBE_INTERVAL_MS);
  };

  const send = async (batch: readonly PendingTake[]): Promise<void> => {
    const args: (string | number)[] = batch.map((p) => p.key);
    for (const p of batch) args.push(p.intervalUs, p.burst);
    try {
      const reply = await redis.meshgateGcra(batch.length, ...args);
      lastAnswerAt = performance.now();
      if (!unresponsive) becameAvailable();
      batch.forEach((p, i) => {
        const o = i * 4;
        p.settle({ allowed: reply[o] === 1, retryAfterMs: Number(reply[o + 1]) / 1000, resetMs: Number(reply[o + 2]) / 1000, remaining: Number(reply[o + 3]) });
      });
    } catch (error) {
      for (const p of batch) p.settle(undefined);
      // A script error (ACL, OOM) fails these takes without declaring Redis unresponsive: a PING
      // would pass. ioredis' late commandTimeout comes after the deadline made that call already.
      if ((error as Error).message !== 'Command timed out') becameUnavailable(error as Error);
    }
  };

  let open: Batch | undefined;
  const flush = (): void => {
    const batch = open!;
    open = undefined;
    batch.sentAt = performance.now();
    // The deadline runs from here, not from the first take: a sidecar whose own loop stalled between
    // the two (CPU pressure) would otherwise fail calls Redis answers in a millisecond. Batching adds
    // one loop turn, normally well under a millisecond. It is expired in the check phase, after the
    // turn's reads, so a reply that came while the loop was late is read first (timers run before reads).
    batch.deadline = setTimeout(() => setImmediate(expire, batch), opts.timeout);
    for (let i = 0; i < batch.takes.length; i += MAX_BATCH) void send(batch.takes.slice(i, i + MAX_BATCH));
  };
  const expire = (batch: Batch): void => {
    batch.deadline = undefined;
    if (batch.unsettled === 0) return;
    for (const p of batch.takes) p.settle(undefined);
    // Unresponsive only when nothing at all came back since this batch left: a Redis that answers,
    // if slowly, fails the late calls one by one (their failureMode), not every call for a while.
    if (lastAnswerAt < batch.sentAt) stopAnswering(new StoreTimeoutError(opts.timeout));
  };
  const openBatch = (): Batch => {
    const batch: Batch = { takes: [], sentAt: Number.POSITIVE_INFINITY, unsettled: 0, deadline: undefined };
    // setImmediate runs after the poll phase: every call parsed from this turn's reads joins the batch.
    setImmediate(flush);
    return batch;
  };

  return {
    take(key, shape) {
      if (unresponsive || redis.status !== 'ready') return NO_ANSWER;
      const batch = (open ??= openBatch());
      return new Promise((resolve) => {
        let done = false;
        batch.unsettled++;
        batch.takes.push({
          key,
          intervalUs: Math.max(1, Math.round(shape.intervalMs * 1000)),
          burst: shape.burst,
          settle(result) {
            if (done) return;
            done = true;
            if (--batch.unsettled === 0 && batch.deadline) clearTimeout(batch.deadline);
            resolve(result);
          },
        });
      });
    },
    status: () => (unresponsive && redis.status === 'ready' ? 'unresponsive' : redis.status),
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
      closed = true;
      if (probeTimer) clearInterval(probeTimer);
      redis.disconnect();
    },
  };
}
