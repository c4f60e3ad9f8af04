import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';
import type { Logger } from '../telemetry/logger.ts';

export interface FolderWatch {
  /** Watches exactly these folders (absolute paths) from now on: new ones added, gone ones closed, failed ones tried again. */
  sync(dirs: readonly string[]): void;
  /** True while some folder of the last sync could not be watched (its changes are seen only by rescans). */
  degraded(): boolean;
  close(): void;
}

/**
 * File events for a folder tree: one plain (non-recursive) fs.watch per
 * folder, the folders being the ones the store's own walk found. Node's
 * recursive watcher stats every entry of the tree on each event and dies on
 * the first link loop (ELOOP); a watcher per folder never looks at an entry,
 * so no entry can stop it. A folder whose watcher fails (removed, inotify
 * limits) is reported once per failure streak and tried again at the next sync.
 */
export function createFolderWatch(onEvent: () => void, log: Logger): FolderWatch {
  const watchers = new Map<string, FSWatcher>();
  const failing = new Set<string>();
  let wanted: readonly string[] = [];
  let closed = false;

  const fail = (dir: string, err: Error): void => {
    if (!failing.has(dir)) log.warn({ folder: dir, err: err.message }, 'cannot watch a policy folder; its changes are seen by rescans until watching works again');
    failing.add(dir);
  };

  const add = (dir: string): void => {
    try {
      const w = watch(dir, { persistent: false }, () => onEvent());
      w.on('error', (err) => {
        w.close();
        if (watchers.get(dir) === w) watchers.delete(dir);
        if (closed) return;
        fail(dir, err);
        // The rescan this causes syncs again: the folder is watched anew if it is still there.
        onEvent();
      });
      watchers.set(dir, w);
      if (failing.delete(dir)) log.info({ folder: dir }, 'watching the policy folder again');
    } catch (err) {
      fail(dir, err as Error);
    }
  };

  return {
    sync(dirs) {
      if (closed) return;
      wanted = dirs;
      const keep = new Set(dirs);
      for (const [dir, w] of watchers) {
        if (keep.has(dir)) continue;
        w.close();
        watchers.delete(dir);
      }
      for (const dir of failing) if (!keep.has(dir)) failing.delete(dir);
      for (const dir of dirs) if (!watchers.has(dir)) add(dir);
    },
    degraded: () => wanted.some((dir) => !watchers.has(dir)),
    close() {
      closed = true;
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
