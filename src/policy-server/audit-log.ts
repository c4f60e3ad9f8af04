import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import type { AuditEntry, AuditLog } from './contracts.ts';

export interface PolicyAuditLog extends AuditLog {
  close(): Promise<void>;
}

/** Largest `limit` a reader may ask for: bounds the memory one read can take. */
export const MAX_AUDIT_READ = 1000;

const CHUNK = 64 * 1024;

/**
 * The admin API's audit trail: one JSON line per change attempt, appended to
 * a file opened with O_APPEND (created mode 0600) and flushed to disk before
 * `append` resolves, so a reply never reports a change whose record could
 * still be lost. Appends are serialised in this process so the lines keep
 * the order of the calls; the file is never rewritten or truncated here.
 * Entries carry subjects, diffs and reasons, never a token: the caller hands
 * over an AuditEntry, which has no field for one.
 *
 * Reads scan the file backwards from its end, so reading the newest entries
 * costs the same however long the log has grown. A line that does not parse
 * (a torn write after a crash) is skipped.
 */
export async function createPolicyAuditLog(opts: { file: string }): Promise<PolicyAuditLog> {
  const handle: FileHandle = await open(opts.file, 'a', 0o600);
  let tail: Promise<void> = Promise.resolve();

  return {
    append(entry) {
      let line: Buffer;
      try {
        line = Buffer.from(`${JSON.stringify(entry)}\n`, 'utf8');
      } catch (err) {
        return Promise.reject(err as Error);
      }
      const written = tail.then(async () => {
        await handle.write(line);
        await handle.datasync();
      });
      // A failed append rejects its own caller and must not poison the next one.
      tail = written.catch(() => undefined);
      return written;
    },
    async read(readOpts = {}) {
      const limit = Math.max(0, Math.min(readOpts.limit ?? 100, MAX_AUDIT_READ));
      if (limit === 0) return [];
      // Entries already queued are part of the log the caller asked about.
      await tail;
      return readLastLines(opts.file, limit);
    },
    async close() {
      await tail;
      await handle.close();
    },
  };
}

async function readLastLines(file: string, limit: number): Promise<AuditEntry[]> {
  const reader = await open(file, 'r');
  try {
    let position = (await reader.stat()).size;
    const entries: AuditEntry[] = [];
    // Bytes after the last newline seen so far that belong to a line whose start is not read yet.
    let carry = Buffer.alloc(0);
    while (position > 0 && entries.length < limit) {
      const size = Math.min(CHUNK, position);
      position -= size;
      const chunk = Buffer.alloc(size);
      await reader.read(chunk, 0, size, position);
      let buffer = Buffer.concat([chunk, carry]);
      let end = buffer.length;
      for (let i = buffer.length - 1; i >= 0 && entries.length < limit; i--) {
        if (buffer[i] !== 0x0a) continue;
        pushLine(entries, buffer.subarray(i + 1, end));
        end = i;
      }
      buffer = buffer.subarray(0, end);
      carry = Buffer.from(buffer);
    }
    if (position === 0 && entries.length < limit) pushLine(entries, carry);
    return entries.reverse();
  } finally {
    await reader.close();
  }
}

function pushLine(into: AuditEntry[], bytes: Buffer): void {
  if (bytes.length === 0) return;
  try {
    into.push(JSON.parse(bytes.toString('utf8')) as AuditEntry);
  } catch {
    // A torn line from a crash mid-write: the entries around it are still good.
  }
}
