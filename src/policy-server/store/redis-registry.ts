import { randomBytes } from 'node:crypto';
import { runBackgroundLoop } from '../../core/background-loop.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { RegistryShare } from '../registry-share.ts';
import { isEndpoint } from '../registry-share.ts';
import type { RegisteredEndpoint, ServiceRegistry } from '../service-registry.ts';
import type { PolicyStoreConnection } from './redis-connection.ts';

export interface RedisRegistryOptions {
  readonly serverId: string;
  /** TTL of this replica's key; renewed every lease/3. */
  readonly leaseMs: number;
  /** Coalesces bursts of registrations into one write. */
  readonly debounceMs: number;
}

/** What another replica published, and until when it counts without news. */
interface RemoteReplica {
  readonly endpoints: readonly RegisteredEndpoint[];
  /** clock.now() after which a read of its key decides whether it is gone. */
  deadline: number;
}

type Message = { readonly id: string; readonly op: 'set'; readonly endpoints: readonly unknown[] } | { readonly id: string; readonly op: 'renew' } | { readonly id: string; readonly op: 'del' };

/**
 * The registry shared between replicas through Redis (`store: redis`).
 *
 * Each replica process has an instance id (`<serverId>.<random>`: two
 * replicas given one serverId by mistake do not overwrite each other) and
 * keeps its registered endpoints under `<prefix>registry:<id>` with a TTL of
 * one lease, listed in set `<prefix>registry:replicas`. On a change (debounced)
 * it rewrites the key and publishes the endpoints on channel
 * `<prefix>registry`; every lease/3 it renews the TTL and publishes a renewal.
 * Other replicas apply messages as they come (no polling) and read everything
 * again after each (re)connect, since messages published meanwhile are lost.
 *
 * A replica that dies stops renewing: its key expires in Redis, and the
 * others, hearing nothing for a lease, read its key and drop it when it is
 * gone. A replica that closes deletes its key and says so at once.
 *
 * Redis unreachable (degraded): the replica keeps every remote entry it knows
 * and expires none, so nothing it pushes meanwhile removes a service another
 * replica still holds; its own changes are written when Redis is back. After
 * a reconnect an entry missing from Redis is kept for one more lease: Redis
 * may have restarted empty, and the other replicas write their keys again as
 * they reconnect.
 */
export function createRedisRegistryShare(registry: ServiceRegistry, conn: PolicyStoreConnection, opts: RedisRegistryOptions, deps: { clock: Clock; logger: Logger }): RegistryShare {
  const id = `${opts.serverId}.${randomBytes(4).toString('hex')}`;
  const channel = `${conn.prefix}registry`;
  const keyOf = (replica: string): string => `${conn.prefix}registry:${replica}`;
  const replicasKey = `${conn.prefix}registry:replicas`;
  const log = deps.logger.child({ component: 'registry-share', store: 'redis' });
  const remote = new Map<string, RemoteReplica>();
  let closed = false;
  let writeTimer: NodeJS.Timeout | undefined;
  const renewals = new AbortController();
  let writing: Promise<void> = Promise.resolve();
  /** Our state changed while it could not be written: write it when Redis is back. */
  let dirty = true;

  const apply = (): void => {
    if (closed) return;
    const endpoints: RegisteredEndpoint[] = [];
    for (const replica of [...remote.keys()].sort()) endpoints.push(...remote.get(replica)!.endpoints);
    registry.setRemote(endpoints);
  };

  const parseEndpoints = (list: readonly unknown[]): RegisteredEndpoint[] => list.filter(isEndpoint);

  /** Writes this replica's key and tells the others; serialized so an older state never lands after a newer one. */
  const publishOwn = (): Promise<void> => {
    writing = writing.then(async () => {
      if (closed || !conn.up()) return;
      const endpoints = registry.local();
      const body = JSON.stringify({ serverId: opts.serverId, endpoints });
      dirty = false;
      try {
        await conn.run('publish', (r) =>
          r
            .multi()
            .set(keyOf(id), body, 'PX', opts.leaseMs)
            .sadd(replicasKey, id)
            .publish(channel, JSON.stringify({ id, op: 'set', endpoints }))
            .exec(),
        );
      } catch (err) {
        dirty = true;
        log.debug({ err: (err as Error).message }, "cannot publish this replica's endpoints; retried when Redis is back");
      }
    });
    return writing;
  };

  const scheduleWrite = (): void => {
    dirty = true;
    if (closed || writeTimer) return;
    writeTimer = setTimeout(() => {
      writeTimer = undefined;
      void publishOwn();
    }, opts.debounceMs);
  };

  /** Reads every replica's key: the truth after a (re)connect. Entries missing from Redis keep their deadline. */
  const readAll = async (grace: boolean): Promise<void> => {
    const now = deps.clock.now();
    const members = await conn.run('read', (r) => r.smembers(replicasKey));
    const others = members.filter((m) => m !== id).sort();
    const bodies = others.length > 0 ? await conn.run('read', (r) => r.mget(...others.map(keyOf))) : [];
    const gone: string[] = [];
    others.forEach((replica, i) => {
      const body = bodies[i];
      if (body === null || body === undefined) return void gone.push(replica);
      try {
        const parsed = JSON.parse(body) as { endpoints?: unknown };
        if (Array.isArray(parsed.endpoints)) remote.set(replica, { endpoints: parseEndpoints(parsed.endpoints), deadline: now + opts.leaseMs });
      } catch {
        // Not ours: nothing to serve from it.
      }
    });
    // Keys expired: forget the names (a replica writes its name again with its key).
    if (gone.length > 0) await conn.run('expire', (r) => r.srem(replicasKey, ...gone)).catch(() => undefined);
    for (const [replica, entry] of remote) {
      if (others.includes(replica) && !gone.includes(replica)) continue;
      // After an outage nobody could renew: give every replica one lease to write its key again.
      if (grace) entry.deadline = Math.max(entry.deadline, now + opts.leaseMs);
    }
    apply();
  };

  /** Entries silent for a lease: read their keys and drop the ones Redis no longer has. Never while degraded. */
  const expireSilent = async (): Promise<void> => {
    if (!conn.up()) return;
    const now = deps.clock.now();
    const due = [...remote].filter(([, entry]) => entry.deadline < now).map(([replica]) => replica);
    if (due.length === 0) return;
    const ttls = await conn.run('expire', async (r) => Promise.all(due.map((replica) => r.pttl(keyOf(replica)))));
    let changed = false;
    due.forEach((replica, i) => {
      const ttl = ttls[i]!;
      if (ttl > 0) remote.get(replica)!.deadline = now + ttl;
      else if (remote.delete(replica)) {
        changed = true;
        log.info({ replica }, 'replica gone: its registry key expired; its endpoints leave the registry');
      }
    });
    if (changed) apply();
  };

  const onMessage = (text: string): void => {
    let message: Message;
    try {
      message = JSON.parse(text) as Message;
    } catch {
      return;
    }
    if (closed || typeof message.id !== 'string' || message.id === id) return;
    const now = deps.clock.now();
    if (message.op === 'set' && Array.isArray(message.endpoints)) {
      remote.set(message.id, { endpoints: parseEndpoints(message.endpoints), deadline: now + opts.leaseMs });
      apply();
    } else if (message.op === 'renew') {
      const entry = remote.get(message.id);
      if (entry) entry.deadline = now + opts.leaseMs;
      // A renewal from a replica not known: its set message was lost (we reconnected meanwhile).
      else void readAll(false).catch(() => undefined);
    } else if (message.op === 'del' && remote.delete(message.id)) apply();
  };

  const renew = async (): Promise<void> => {
    if (!conn.up()) return;
    if (dirty) return publishOwn();
    const [[, expired]] = ((await conn.run('renew', (r) =>
      r
        .multi()
        .pexpire(keyOf(id), opts.leaseMs)
        .publish(channel, JSON.stringify({ id, op: 'renew' }))
        .exec(),
    )) ?? [[null, 0]]) as [[unknown, number]];
    // The key is gone (evicted, or Redis restarted empty): write it again.
    if (expired === 0) await publishOwn();
  };

  registry.onChange(scheduleWrite);
  conn.subscribe(channel, onMessage);
  let upBefore = false;
  conn.onUp(async () => {
    dirty = true;
    await publishOwn();
    await readAll(upBefore);
    upBefore = true;
  });

  return {
    async start() {
      const every = Math.max(50, Math.floor(opts.leaseMs / 3));
      void runBackgroundLoop(
        async () => {
          await renew();
          await expireSilent();
          return every;
        },
        // Redis errors are counted by the connection and /ready says degraded; a failed renewal is tried again at the renewal pace.
        { signal: renewals.signal, firstDelayMs: every, backoff: { baseMs: every, maxMs: every }, random: () => 0, onError: () => undefined },
      );
    },
    refresh: () => readAll(false),
    async close() {
      clearTimeout(writeTimer);
      renewals.abort();
      await writing;
      closed = true;
      if (!conn.up()) return;
      // Its sidecars reconnect elsewhere and register there; the others drop this replica at once.
      await conn
        .run('publish', (r) =>
          r
            .multi()
            .del(keyOf(id))
            .srem(replicasKey, id)
            .publish(channel, JSON.stringify({ id, op: 'del' }))
            .exec(),
        )
        .catch(() => undefined);
    },
  };
}
