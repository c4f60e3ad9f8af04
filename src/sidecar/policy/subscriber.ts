import type * as grpc from '@grpc/grpc-js';
import type { PolicySubscriberConfig } from '../../config/policy-subscriber-schema.ts';
import { defaultPolicyServerIdentity } from '../../config/policy-subscriber-schema.ts';
import { runBackgroundLoop } from '../../core/background-loop.ts';
import type { Clock, Random } from '../../core/clock.ts';
import { parseSpiffeId } from '../../core/spiffe-id.ts';
import type { WorkloadCredentials } from '../../identity/cert-manager.ts';
import type { WireSnapshot } from '../../policy/policy-api.ts';
import { ackRequest, createPolicyClient, helloRequest, policyChannelCredentials } from '../../policy/policy-api.ts';
import type { PolicyDocument, RegistryService } from '../../policy/types.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { PolicySnapshotStore, ReceivedSnapshot, RefusedDocument, StoredSnapshot } from './snapshot-store.ts';
import type { ReconnectPlan } from './subscriber-reconnect.ts';
import { planReconnect } from './subscriber-reconnect.ts';

/** What the sidecar enforces, handed to onSnapshot listeners (compile it once per call). */
export interface EffectiveSnapshot {
  /** The server's version this state was built from. */
  readonly version: string;
  /** Epoch ms when it was received from a server (for a disk copy: when the server last sent it). */
  readonly receivedAt: number;
  /** `disk`: the persisted copy loaded at boot, not yet confirmed by a server. */
  readonly source: 'server' | 'disk';
  /** Every document in force: the valid ones of `version` plus the previous good copy of refused ones. */
  readonly documents: readonly PolicyDocument[];
  readonly services: readonly RegistryService[];
  /**
   * Documents of `version` the sidecar refused. `kept: false` means the server
   * wants a document in force that the sidecar has no good copy of: a
   * fail-closed compiler should deny what it would have governed.
   */
  readonly refused: readonly RefusedDocument[];
  /**
   * The server said its registry is warming up (it restarted recently): a
   * service or endpoint missing from `services` may still be up. Never set
   * on a disk copy.
   */
  readonly registryWarming?: boolean;
}

interface PolicySubscriberStatus {
  readonly version: string;
  readonly receivedAt: number;
  readonly source: 'server' | 'disk';
  /** Running on a copy no server has confirmed for longer than maxStaleness. */
  readonly degraded: boolean;
  readonly hasPolicy: boolean;
  /** The server the stream is up with, if any. */
  readonly connectedTo: string | undefined;
  /** server_id of the replica that sent the current snapshot. */
  readonly serverId: string | undefined;
  readonly refused: readonly RefusedDocument[];
}

export interface PolicyReadiness {
  /** False only with no policy at all and onNoPolicy: deny. A degraded sidecar still serves. */
  readonly ok: boolean;
  readonly state: 'ok' | 'degraded' | 'no-policy';
  readonly detail: string;
}

export interface PolicySubscriberDeps {
  /** The workload's current mTLS credentials; each (re)connection reads them afresh. */
  credentials(): WorkloadCredentials | undefined;
  readonly hello: {
    readonly sidecarId: string;
    /** host:port other sidecars reach this workload at (its inbound listener). */
    readonly address: string;
    readonly labels: Readonly<Record<string, string>>;
    /** name.namespace of services the workload calls; defaults to config.destinations, else the whole registry. */
    readonly destinations?: readonly string[];
  };
  readonly store: PolicySnapshotStore;
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
}

export interface PolicySubscriber {
  /**
   * Loads the persisted copy (source `disk`) when nothing is in force yet.
   * Idempotent; run() does it first. Await it before opening listeners so a
   * restarted sidecar enforces its copy from its first call.
   */
  boot(): Promise<void>;
  /** The stream loop: connect -> Hello -> snapshots, each applied and ACKed/NACKed -> on loss, keep the snapshot -> backoff -> next server. Never throws. */
  run(signal: AbortSignal): Promise<void>;
  /** Called with every change of what is in force (never concurrently); at once with the current snapshot if there is one. */
  onSnapshot(listener: (effective: EffectiveSnapshot) => void): void;
  /** Resolves with the first snapshot in force (disk or server); rejects if `signal` aborts first. */
  first(signal?: AbortSignal): Promise<EffectiveSnapshot>;
  current(): PolicySubscriberStatus | undefined;
  /** For /ready. */
  ready(): PolicyReadiness;
  stats(): {
    readonly acks: number;
    readonly nacks: number;
    readonly failures: number;
    readonly lastError: string | undefined;
  };
}

/**
 * The sidecar's end of the policy stream, shaped like the certificate loop
 * (src/identity/cert-manager.ts): attempt -> keep the last good value on
 * failure -> jittered backoff -> again.
 *
 * Freshness: a copy is confirmed while a stream is up and synced (it received
 * a snapshot); when the stream goes, the copy was current up to that moment.
 * So `degraded` means "no server has vouched for this copy for maxStaleness",
 * not "the version is old": an unchanged policy never goes stale while connected.
 *
 * Invariant: `source === 'server'` iff some stream delivered the snapshot in force;
 * `connected !== undefined` iff a stream is up and has delivered at least one snapshot.
 */
export function createPolicySubscriber(config: PolicySubscriberConfig, deps: PolicySubscriberDeps): PolicySubscriber {
  const { store, clock, random, logger } = deps;
  const servers = config.servers;
  const destinations = deps.hello.destinations ?? config.destinations ?? [];
  const listeners: Array<(e: EffectiveSnapshot) => void> = [];
  const waiters: Array<(e: EffectiveSnapshot) => void> = [];

  let effective: EffectiveSnapshot | undefined;
  let connected: { address: string; serverId: string } | undefined;
  let serverId: string | undefined;
  let freshAt = 0;
  let degradedReported = false;
  let booted: Promise<void> | undefined;
  let acks = 0;
  let nacks = 0;
  let failures = 0;
  let lastError: string | undefined;

  const install = (snapshot: StoredSnapshot, source: 'server' | 'disk', registryWarming = false): void => {
    effective = {
      version: snapshot.version,
      receivedAt: snapshot.receivedAt,
      source,
      documents: snapshot.documents.map((d) => d.document),
      services: snapshot.services,
      refused: snapshot.refused,
      registryWarming,
    };
    const next = effective;
    for (const listener of listeners) {
      try {
        listener(next);
      } catch (err) {
        logger.error({ err: (err as Error).message, version: next.version }, 'installing a policy snapshot failed');
      }
    }
    for (const wake of waiters.splice(0)) wake(next);
  };

  const isDegraded = (): boolean => effective !== undefined && connected === undefined && clock.now() - freshAt > config.maxStaleness;

  // A degraded mode gets one warning when it starts and one line when it ends, not one per probe.
  const noteDegraded = (): boolean => {
    const degraded = isDegraded();
    if (degraded && !degradedReported) {
      logger.warn(
        { version: effective?.version, source: effective?.source, unconfirmedForMs: clock.now() - freshAt, maxStalenessMs: config.maxStaleness, lastError },
        'policy snapshot is stale: no policy server has confirmed it within maxStaleness; still enforcing it',
      );
    } else if (!degraded && degradedReported) {
      logger.info({ version: effective?.version }, 'policy snapshot confirmed again');
    }
    degradedReported = degraded;
    return degraded;
  };

  const boot = (): Promise<void> => {
    booted ??= (async () => {
      // The store may have been loaded by its owner already; its state is then the disk copy.
      const loaded = store.current() ?? (await store.load());
      // A server may have answered while the file was being read; its snapshot wins.
      if (!loaded || effective !== undefined) return;
      freshAt = loaded.receivedAt;
      install(loaded, 'disk');
      logger.info(
        { version: loaded.version, receivedAt: new Date(loaded.receivedAt).toISOString(), documents: loaded.documents.length, file: store.file },
        'enforcing the persisted policy snapshot until a policy server answers',
      );
    })().catch((err: unknown) => {
      logger.error({ err: (err as Error).message }, 'loading the persisted policy snapshot failed');
    });
    return booted;
  };

  const expectedIdentity = (creds: WorkloadCredentials): string => {
    if (config.expectedIdentity) return config.expectedIdentity;
    const own = creds.facts.spiffeId === undefined ? undefined : parseSpiffeId(creds.facts.spiffeId);
    if (!own) throw new Error('cannot tell the trust domain: the workload certificate has no meshgate SPIFFE ID (set policy.expectedIdentity)');
    return defaultPolicyServerIdentity(own.trustDomain);
  };

  const applySnapshot = (
    address: string,
    msg: WireSnapshot,
    received: ReceivedSnapshot,
    ack: (a: { version: string; accepted: boolean; errors: readonly { document: string; field: string; reason: string }[] }) => void,
  ): void => {
    const result = store.apply(received, clock.now());
    ack(result.ack);
    if (result.ack.accepted) {
      acks++;
      logger.info(
        { version: msg.version, serverId: msg.serverId, server: address, documents: result.snapshot.documents.length, services: result.snapshot.services.length, changed: result.changed },
        'policy snapshot applied',
      );
    } else {
      nacks++;
      logger.warn(
        { version: msg.version, serverId: msg.serverId, server: address, errors: result.ack.errors, kept: result.snapshot.refused.filter((r) => r.kept).map((r) => r.key) },
        'policy snapshot NACKed: refused documents keep their last good copy, the others apply',
      );
    }
    const wasServer = effective?.source === 'server';
    connected = { address, serverId: msg.serverId };
    serverId = msg.serverId;
    freshAt = clock.now();
    lastError = undefined;
    noteDegraded();
    if (result.changed || !wasServer) install(result.snapshot, 'server', msg.registryWarming === true);
  };

  /**
   * One connection. Resolves with why the stream ended, once it had synced;
   * rejects when it never delivered a snapshot (refused, unreachable, silent).
   */
  const attempt = (address: string, signal: AbortSignal): Promise<string> =>
    new Promise((resolve, reject) => {
      const creds = deps.credentials();
      if (!creds) {
        reject(new Error('no workload certificate yet'));
        return;
      }
      const expected = expectedIdentity(creds);
      // A channel per connection, so every reconnect presents the certificate current at that moment.
      const client = createPolicyClient(address, policyChannelCredentials(creds, expected), {
        'grpc.ssl_target_name_override': config.serverName,
        'grpc.default_authority': config.serverName,
        'grpc.keepalive_permit_without_calls': 1,
        'grpc.enable_retries': 0,
      });
      const stream = client.subscribe();
      let synced = false;
      let settled = false;
      const finish = (why: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(firstSnapshotTimer);
        signal.removeEventListener('abort', onAbort);
        stream.cancel();
        client.close();
        if (synced) {
          // The copy was confirmed up to this moment.
          freshAt = clock.now();
          connected = undefined;
          resolve(why.message);
        } else {
          reject(why);
        }
      };
      const onAbort = (): void => finish(new Error('stopped'));
      signal.addEventListener('abort', onAbort, { once: true });
      const firstSnapshotTimer = setTimeout(() => finish(new Error(`no snapshot from ${address} within ${config.connectTimeout}ms`)), config.connectTimeout);

      // Snapshots apply in the order they came; one with checks of your own waits for their compile (and those after it wait for it).
      let applying: Promise<void> | undefined;
      stream.on('data', (msg: WireSnapshot) => {
        if (settled) return;
        clearTimeout(firstSnapshotTimer);
        synced = true;
        const received = fromWire(msg);
        const apply = (): void => {
          if (settled) return;
          try {
            applySnapshot(address, msg, received, (ack) => stream.write(ackRequest(ack.version, ack.accepted, ack.errors)));
          } catch (err) {
            logger.error({ err: (err as Error).message, version: msg.version }, 'applying a policy snapshot failed');
            finish(err as Error);
          }
        };
        const compiling = store.prepare(received);
        if (!compiling && !applying) return apply();
        const next: Promise<void> = (applying ?? Promise.resolve())
          .then(() => compiling)
          .then(apply)
          .finally(() => {
            if (applying === next) applying = undefined;
          });
        applying = next;
      });
      stream.on('error', (err: grpc.ServiceError) => finish(new Error(`${address}: ${err.details || err.message}`)));
      stream.on('end', () => finish(new Error(`${address} ended the stream`)));
      stream.write(
        helloRequest({
          sidecarId: deps.hello.sidecarId,
          address: deps.hello.address,
          labels: deps.hello.labels,
          currentVersion: store.current()?.version ?? '',
          destinations,
        }),
      );
    });

  return {
    boot,
    async run(signal) {
      await boot();
      const backoff = { baseMs: config.reconnect.base, maxMs: config.reconnect.max };
      let current = 0;
      let failuresInRow = 0;
      // One stream per step: connect -> Hello -> snapshots until it ends; the step says how long to wait before the next server.
      await runBackgroundLoop(
        async () => {
          const address = servers[current]!;
          let plan: ReconnectPlan;
          try {
            const why = await attempt(address, signal);
            if (signal.aborted) return 0;
            failuresInRow = 0;
            lastError = why;
            plan = planReconnect({ servers: servers.length, current, synced: true, failuresInRow }, backoff, random);
            logger.warn({ err: why, server: address, next: servers[plan.next], retryInMs: plan.delayMs, version: effective?.version }, 'policy stream ended; keeping the current snapshot');
          } catch (err) {
            if (signal.aborted) return 0;
            failures++;
            failuresInRow++;
            lastError = (err as Error).message;
            plan = planReconnect({ servers: servers.length, current, synced: false, failuresInRow }, backoff, random);
            logger.warn(
              { err: lastError, server: address, next: servers[plan.next], retryInMs: plan.delayMs, version: effective?.version ?? null, source: effective?.source ?? null },
              effective ? 'policy server unreachable; keeping the current snapshot' : 'policy server unreachable; no policy in force',
            );
          }
          current = plan.next;
          noteDegraded();
          return plan.delayMs;
        },
        {
          signal,
          backoff,
          random,
          ref: true,
          // A bug in one step must not end the subscription for good: logged, and the next step follows a backoff.
          onError: (err, failuresInRow, retryInMs) => logger.error({ err: (err as Error).message, failuresInRow, retryInMs }, 'policy subscriber step failed unexpectedly; retrying'),
        },
      );
    },
    onSnapshot(listener) {
      listeners.push(listener);
      if (effective) {
        try {
          listener(effective);
        } catch (err) {
          logger.error({ err: (err as Error).message, version: effective.version }, 'installing a policy snapshot failed');
        }
      }
    },
    first(signal) {
      if (effective) return Promise.resolve(effective);
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    },
    current() {
      if (!effective) return undefined;
      return {
        version: effective.version,
        receivedAt: effective.receivedAt,
        source: effective.source,
        degraded: noteDegraded(),
        hasPolicy: true,
        connectedTo: connected?.address,
        serverId,
        refused: effective.refused,
      };
    },
    ready() {
      if (!effective) {
        const why = `no policy snapshot (none received from ${servers.join(', ')}, none persisted)${lastError ? `; last error: ${lastError}` : ''}`;
        return config.onNoPolicy === 'allow'
          ? { ok: true, state: 'no-policy', detail: `${why}; onNoPolicy: allow admits every call` }
          : { ok: false, state: 'no-policy', detail: `${why}; onNoPolicy: deny admits no call` };
      }
      const refused = effective.refused.length > 0 ? `; ${effective.refused.length} document(s) refused: ${effective.refused.map((r) => r.key).join(', ')}` : '';
      if (noteDegraded()) {
        const ageS = Math.round((clock.now() - freshAt) / 1000);
        return {
          ok: true,
          state: 'degraded',
          detail: `enforcing policy version ${effective.version} (${effective.source}) not confirmed by a server for ${ageS}s (maxStaleness ${Math.round(config.maxStaleness / 1000)}s)${lastError ? `; last error: ${lastError}` : ''}${refused}`,
        };
      }
      const from = connected ? `from ${connected.address}` : `(${effective.source}, reconnecting)`;
      return { ok: true, state: 'ok', detail: `policy version ${effective.version} ${from}${refused}` };
    },
    stats: () => ({ acks, nacks, failures, lastError }),
  };
}

function fromWire(msg: WireSnapshot): ReceivedSnapshot {
  return {
    version: msg.version,
    documents: msg.documents.map((d) => ({ kind: d.kind, namespace: d.namespace, name: d.name, json: d.json, digest: d.digest, ...(d.javascript ? { javascript: d.javascript } : {}) })),
    services: msg.services.map((s) => ({
      name: s.name,
      namespace: s.namespace,
      // proto3 cannot tell an unset weight from 0; the registry never means "no traffic" by it.
      endpoints: s.endpoints.map((e) => ({ address: e.address, labels: { ...e.labels }, weight: e.weight > 0 ? e.weight : 1 })),
      identities: [...s.identities],
      external: s.external,
    })),
  };
}
