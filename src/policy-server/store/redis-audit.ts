import type { PolicyAuditLog } from '../audit-log.ts';
import { MAX_AUDIT_READ } from '../audit-log.ts';
import type { AuditEntry } from '../contracts.ts';
import type { PolicyStoreConnection } from './redis-connection.ts';

/**
 * The audit trail with `store: redis`: one JSON entry per change attempt,
 * appended to list `<prefix>audit`, so every replica's /api/v1/audit shows
 * the writes made through any replica, and the trail outlives the pods.
 * An entry that cannot be appended (Redis unreachable) fails its write's
 * reply with admin.audit_failed, as a file that cannot be written does.
 * The list is never trimmed here: keep Redis persistent (AOF) and export it
 * if it must be kept longer than Redis.
 */
export function createRedisAuditLog(conn: PolicyStoreConnection): PolicyAuditLog {
  const key = `${conn.prefix}audit`;
  let tail: Promise<unknown> = Promise.resolve();
  return {
    append(entry) {
      // Serialised in this process, so this replica's entries keep the order of its calls.
      const written = tail.then(() => conn.run('audit', (r) => r.rpush(key, JSON.stringify(entry))));
      tail = written.catch(() => undefined);
      return written.then(() => undefined);
    },
    async read(opts = {}) {
      const limit = Math.max(0, Math.min(opts.limit ?? 100, MAX_AUDIT_READ));
      if (limit === 0) return [];
      await tail;
      const lines = await conn.run('audit', (r) => r.lrange(key, -limit, -1));
      const entries: AuditEntry[] = [];
      for (const line of lines) {
        try {
          entries.push(JSON.parse(line) as AuditEntry);
        } catch {
          // Not ours: skipped, like a torn line in the file.
        }
      }
      return entries;
    },
    async close() {
      await tail;
    },
  };
}
