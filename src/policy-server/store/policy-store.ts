import path from 'node:path';
import { ConfigError } from '../../config/load.ts';
import type { PolicyServerConfig } from '../../config/policy-server-schema.ts';
import type { Clock } from '../../core/clock.ts';
import { redactRedisUrl } from '../../core/redis-url.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { PolicyAuditLog } from '../audit-log.ts';
import { createPolicyAuditLog } from '../audit-log.ts';
import type { FolderDocumentStore, PolicyModel } from '../document-store.ts';
import { openDocumentStore } from '../document-store.ts';
import type { PolicyServerMetrics } from '../policy-server-metrics.ts';
import type { RegistryShare } from '../registry-share.ts';
import { createRegistryShare } from '../registry-share.ts';
import type { ServiceRegistry } from '../service-registry.ts';
import { createRedisAuditLog } from './redis-audit.ts';
import type { PolicyStoreConnection } from './redis-connection.ts';
import { createPolicyStoreConnection } from './redis-connection.ts';
import { createRedisDocuments, VIRTUAL_PREFIX } from './redis-documents.ts';
import { createRedisRegistryShare } from './redis-registry.ts';

/** Where one replica's documents, shared registry and audit trail live (config `store`). */
export interface PolicyStore {
  readonly documents: FolderDocumentStore;
  readonly audit: PolicyAuditLog;
  /** `ok`, or `degraded: ...` while the shared store is unreachable (the replica keeps serving). */
  health(): string;
  /** For /config_dump: never a password. */
  describe(): Record<string, unknown>;
  /** Cleanups in the order to run them (the caller runs its list in reverse). */
  readonly cleanups: ReadonlyArray<() => Promise<void> | void>;
}

export interface PolicyStoreDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly metrics: PolicyServerMetrics;
  readonly model: PolicyModel;
  readonly configFile: string;
  readonly resolvePath: (file: string) => string;
  /** Aborts the wait for Redis at start. */
  readonly signal: AbortSignal;
}

/**
 * Opens the store of `config.store`: `folder` (documents and admin writes in
 * the policy folder, the registry shared through files) or `redis` (the
 * folder read-only, admin documents, registry and audit trail in Redis).
 * With Redis the replica waits for it once at start: a replica that never
 * read the admin documents must not serve snapshots without them (an
 * admin-written DENY would be missing). Later outages degrade, never stop.
 */
export async function openPolicyStore(config: PolicyServerConfig, registry: ServiceRegistry, serverId: string, deps: PolicyStoreDeps): Promise<PolicyStore> {
  const { logger, clock, metrics, model, configFile, resolvePath } = deps;
  const folder = resolvePath(config.policies.folder);
  const cleanups: Array<() => Promise<void> | void> = [];
  const storeOpts = { folder, debounceMs: config.push.debounce, pollMs: config.policies.pollFallback, settleMs: config.policies.settle };
  const folderProblem = (err: unknown): ConfigError =>
    new ConfigError(`${configFile}: policies.folder: cannot use ${config.policies.folder} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);

  if (config.store === 'folder') {
    let documents: FolderDocumentStore;
    try {
      documents = await openDocumentStore(storeOpts, model, { logger, metrics });
    } catch (err) {
      throw folderProblem(err);
    }
    cleanups.push(() => documents.close());
    let share: RegistryShare | undefined;
    if (config.registry.shared.enabled) {
      share = createRegistryShare(
        registry,
        {
          folder: config.registry.shared.folder ? resolvePath(config.registry.shared.folder) : path.join(folder, '.registry'),
          serverId,
          leaseMs: config.registry.shared.lease,
          debounceMs: config.push.debounce,
        },
        { clock, logger, metrics },
      );
      await share.start();
      cleanups.push(() => share!.close());
    }
    let audit: PolicyAuditLog;
    try {
      audit = await createPolicyAuditLog({ file: resolvePath(config.adminApi.audit.file) });
    } catch (err) {
      throw new ConfigError(`${configFile}: adminApi.audit.file: cannot open ${config.adminApi.audit.file} for appending (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    cleanups.push(() => audit.close());
    return { documents, audit, health: () => 'ok', describe: () => ({ type: 'folder' }), cleanups };
  }

  const redisConfig = config.redis!;
  let conn: PolicyStoreConnection;
  try {
    conn = createPolicyStoreConnection(
      {
        ...redisConfig,
        ...(redisConfig.passwordFile ? { passwordFile: resolvePath(redisConfig.passwordFile) } : {}),
        ...(redisConfig.caFile ? { caFile: resolvePath(redisConfig.caFile) } : {}),
        ...(redisConfig.sentinel ? { sentinel: { ...redisConfig.sentinel, ...(redisConfig.sentinel.passwordFile ? { passwordFile: resolvePath(redisConfig.sentinel.passwordFile) } : {}) } } : {}),
      },
      { logger, metrics, clock },
    );
  } catch (err) {
    throw new ConfigError(`${configFile}: redis: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  cleanups.push(() => conn.close());
  const docs = createRedisDocuments(conn, model, { debounceMs: config.push.debounce }, { logger, clock });
  cleanups.push(() => docs.close());
  const share = createRedisRegistryShare(registry, conn, { serverId, leaseMs: redisConfig.lease, debounceMs: config.push.debounce }, { clock, logger });
  try {
    logger.info({ redis: redactRedisUrl(redisConfig.url), sentinel: redisConfig.sentinel?.name }, 'waiting for the policy store (Redis)');
    await conn.whenUp(deps.signal);
    await share.start();
    cleanups.push(() => share.close());
    let folderStore: FolderDocumentStore;
    try {
      folderStore = await openDocumentStore({ ...storeOpts, overlay: docs }, model, { logger, metrics });
    } catch (err) {
      throw folderProblem(err);
    }
    cleanups.push(() => folderStore.close());
    const servedFromFolder = (key: string): string | undefined => {
      const d = folderStore.documents().find((doc) => doc.key === key);
      return d && !d.file.startsWith(VIRTUAL_PREFIX) ? d.file : undefined;
    };
    const documents: FolderDocumentStore = {
      ...folderStore,
      put: (text, actor) => docs.put(text, actor, servedFromFolder),
      remove: (key, actor) => docs.remove(key, actor, servedFromFolder),
    };
    const audit = createRedisAuditLog(conn);
    cleanups.push(() => audit.close());
    return {
      documents,
      audit,
      health() {
        const problem = conn.problem();
        if (!problem) return 'ok';
        return `degraded: Redis unreachable since ${new Date(problem.since).toISOString()} (${problem.error}); serving the last merged registry and documents, admin writes refused`;
      },
      describe: () => ({
        type: 'redis',
        url: redactRedisUrl(redisConfig.url),
        sentinel: redisConfig.sentinel ?? null,
        keyPrefix: redisConfig.keyPrefix,
        lease: redisConfig.lease,
        connected: conn.up(),
        adminDocuments: docs.stats(),
      }),
      cleanups,
    };
  } catch (err) {
    for (const step of [...cleanups].reverse()) await step();
    throw err;
  }
}
