import { randomBytes } from 'node:crypto';
import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { runBackgroundLoop } from '../core/background-loop.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../telemetry/logger.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { PolicyServerMetrics } from './policy-server-metrics.ts';
import type { RegisteredEndpoint, ServiceRegistry } from './service-registry.ts';

export interface RegistryShareOptions {
  readonly folder: string;
  readonly serverId: string;
  /** A file not rewritten for this long is ignored: its replica is gone. After twice this long it is deleted. */
  readonly leaseMs: number;
  /** Coalesces bursts of registrations into one write. */
  readonly debounceMs: number;
}

export interface RegistryShare {
  /** Writes this replica's file once and reads the others'; resolves even when the folder is unusable (degraded, logged). */
  start(): Promise<void>;
  /** Rereads the other replicas' files now (tests; the watcher and the lease timer call it too). */
  refresh(): Promise<void>;
  /** Removes this replica's file: its sidecars reconnect elsewhere and register there. */
  close(): Promise<void>;
}

interface ShareFile {
  readonly serverId: string;
  /** ms since the epoch, by the writer's clock. */
  readonly renewedAt: number;
  readonly endpoints: readonly RegisteredEndpoint[];
}

/**
 * Replicas share their registrations through a folder (by default inside the
 * policy folder, which they share already): each writes
 * `<folder>/<serverId>.<random>.json` with the endpoints of its open streams, renews it
 * every lease/3, and reads everyone else's. So a sidecar connected to replica
 * A is in the registry that replica B serves, and both compute the same
 * snapshot versions.
 *
 * Degraded mode: when the folder cannot be written or read (a read-only
 * mount), the replica serves its own registrations only; a warning is logged
 * once per failure streak and meshgate_policy_registry_share_errors_total counts.
 *
 * Leases compare the writer's clock with the reader's: replicas need clocks
 * within a fraction of the lease of each other (NTP does far better).
 *
 * Expiry: a replica killed without close() (SIGKILL, OOM, node loss) leaves
 * its file, and every restart adds one (the name has a random part). Any
 * replica deletes a file not renewed for two leases, and a temporary file of
 * a write cut short once it is that old. Deleting a live replica's file by
 * mistake (a clock far off) costs little: it writes it again within lease/3.
 */
export function createRegistryShare(registry: ServiceRegistry, opts: RegistryShareOptions, deps: { clock: Clock; logger: Logger; metrics: PolicyServerMetrics }): RegistryShare {
  // A random part per process: two replicas given the same serverId by mistake must not overwrite each other's file.
  const ownFile = path.join(opts.folder, `${opts.serverId.replace(/[^A-Za-z0-9._-]/g, '_')}.${randomBytes(4).toString('hex')}.json`);
  const log = deps.logger.child({ component: 'registry-share' });
  let closed = false;
  let writeTimer: NodeJS.Timeout | undefined;
  const renewals = new AbortController();
  let watcher: FSWatcher | undefined;
  let writing: Promise<void> = Promise.resolve();
  let writeFailing = false;
  let readFailing = false;
  let refreshing: Promise<void> | undefined;
  let refreshAgain = false;

  let lastWritten = '';

  const write = (force: boolean): Promise<void> => {
    // Serialized: an older state must never be renamed over a newer one.
    writing = writing.then(async () => {
      if (closed) return;
      const endpoints = JSON.stringify(registry.local());
      // Remote changes also reach registry.onChange; they leave this file as it is.
      if (!force && endpoints === lastWritten) return;
      const body = `{"serverId":${JSON.stringify(opts.serverId)},"renewedAt":${deps.clock.now()},"endpoints":${endpoints}}\n`;
      try {
        await writeFileAtomic(ownFile, body);
        lastWritten = endpoints;
        if (writeFailing) log.info({ file: ownFile }, 'shared registry writable again');
        writeFailing = false;
      } catch (err) {
        deps.metrics.registryShareErrors.inc({ op: 'write' });
        if (!writeFailing) log.warn({ file: ownFile, err: (err as Error).message }, "cannot write the shared registry; other replicas will not see this replica's endpoints");
        writeFailing = true;
      }
    });
    return writing;
  };

  const scheduleWrite = (): void => {
    if (closed || writeTimer) return;
    writeTimer = setTimeout(() => {
      writeTimer = undefined;
      void write(false);
    }, opts.debounceMs);
  };

  const readOthers = async (): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(opts.folder);
    } catch (err) {
      deps.metrics.registryShareErrors.inc({ op: 'read' });
      if (!readFailing) log.warn({ folder: opts.folder, err: (err as Error).message }, "cannot read the shared registry; serving this replica's endpoints only");
      readFailing = true;
      registry.setRemote([]);
      return;
    }
    readFailing = false;
    const now = deps.clock.now();
    const endpoints: RegisteredEndpoint[] = [];
    for (const name of names.sort()) {
      const file = path.join(opts.folder, name);
      if (name.startsWith('.') && name.endsWith('.tmp')) {
        await expireTemp(file, now);
        continue;
      }
      if (!name.endsWith('.json') || name.startsWith('.')) continue;
      if (file === ownFile) continue;
      let parsed: ShareFile;
      try {
        parsed = JSON.parse(await readFile(file, 'utf8')) as ShareFile;
      } catch {
        // Removed between readdir and read, or not ours: nothing to serve from it.
        continue;
      }
      if (typeof parsed.renewedAt !== 'number' || !Array.isArray(parsed.endpoints)) continue;
      const age = now - parsed.renewedAt;
      if (age > 2 * opts.leaseMs) await expire(file, { serverId: parsed.serverId, notRenewedForMs: age });
      if (age > opts.leaseMs) continue;
      for (const e of parsed.endpoints) if (isEndpoint(e)) endpoints.push(e);
    }
    if (!closed) registry.setRemote(endpoints);
  };

  /** Deletes the file of a replica gone for two leases; a failure is counted and retried on the next read. */
  const expire = async (file: string, what: Record<string, unknown>): Promise<void> => {
    if (closed) return;
    try {
      await rm(file, { force: true });
      log.info({ file, ...what }, 'removed the shared registry file of a replica gone for two leases');
    } catch (err) {
      deps.metrics.registryShareErrors.inc({ op: 'expire' });
      log.warn({ file, err: (err as Error).message }, 'cannot remove an expired shared registry file');
    }
  };

  /** A temporary file left by a write that never finished (its writer was killed): judged by its mtime. */
  const expireTemp = async (file: string, now: number): Promise<void> => {
    let mtimeMs: number;
    try {
      ({ mtimeMs } = await stat(file));
    } catch {
      return; // renamed into place or removed meanwhile
    }
    if (now - mtimeMs > 2 * opts.leaseMs) await expire(file, { notWrittenForMs: Math.round(now - mtimeMs) });
  };

  // One read at a time; events during a read cause exactly one more.
  const refresh = (): Promise<void> => {
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        refreshAgain = false;
        await readOthers();
      } while (refreshAgain && !closed);
    })().finally(() => {
      refreshing = undefined;
    });
    return refreshing;
  };

  registry.onChange(scheduleWrite);

  return {
    async start() {
      try {
        await mkdir(opts.folder, { recursive: true });
      } catch {
        // write() and refresh() report it.
      }
      await write(true);
      await refresh();
      try {
        watcher = watch(opts.folder, { persistent: false }, () => void refresh());
        watcher.on('error', () => {
          // The lease timer keeps reading.
          watcher?.close();
          watcher = undefined;
        });
      } catch {
        // No events on this file system: the lease timer alone keeps the view fresh.
      }
      const every = Math.max(100, Math.floor(opts.leaseMs / 3));
      void runBackgroundLoop(
        async () => {
          await write(true);
          await refresh();
          return every;
        },
        // Write and read failures are counted and logged inside; a failed renewal is simply tried again at the renewal pace.
        {
          signal: renewals.signal,
          firstDelayMs: every,
          backoff: { baseMs: every, maxMs: every },
          random: () => 0,
          onError: (err) => log.warn({ err: (err as Error).message }, 'renewing the shared registry failed'),
        },
      );
    },
    refresh,
    async close() {
      closed = true;
      clearTimeout(writeTimer);
      renewals.abort();
      watcher?.close();
      await writing;
      await rm(ownFile, { force: true }).catch(() => undefined);
    },
  };
}

export function isEndpoint(e: unknown): e is RegisteredEndpoint {
  const v = e as Partial<RegisteredEndpoint> | null;
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof v.address === 'string' &&
    typeof v.namespace === 'string' &&
    typeof v.service === 'string' &&
    typeof v.sidecarId === 'string' &&
    typeof v.streamId === 'string' &&
    v.labels !== null &&
    typeof v.labels === 'object'
  );
}
