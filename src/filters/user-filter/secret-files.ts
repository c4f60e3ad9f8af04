import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../../core/clock.ts';

/*
 * The keys checks of your own sign with (meshgate.hmacSha256Secret): files of
 * one folder of the sidecar, typically a mounted Kubernetes Secret. A check
 * names a file; the key is read here and never enters its sandbox. Read on
 * use and kept for RELOAD_MS, so a rotated Secret (the kubelet swaps the
 * files) is used within that time without a policy push.
 */

const RELOAD_MS = 10_000;
/** A key is a few dozen bytes; a larger file is not one. */
const MAX_KEY_BYTES = 4096;

type SecretKeys = (name: string) => Buffer | undefined;

export interface SecretFiles {
  /** The keys one document may use: only the names it lists (spec.secrets). */
  forDocument(names: readonly string[]): SecretKeys;
}

export function createSecretFiles(opts: { readonly dir: string; readonly clock: Clock; readonly onError?: (name: string, message: string) => void }): SecretFiles {
  const cache = new Map<string, { key: Buffer | undefined; readAt: number }>();
  const read = (name: string): Buffer | undefined => {
    const now = opts.clock.monotonic();
    const cached = cache.get(name);
    if (cached !== undefined && now - cached.readAt < RELOAD_MS) return cached.key;
    let key: Buffer | undefined;
    try {
      // The name matched the Filter schema (a file name, no path); basename keeps it so whatever a caller passes.
      const data = readFileSync(path.join(opts.dir, path.basename(name)));
      key = data.length > 0 && data.length <= MAX_KEY_BYTES ? data : undefined;
      if (key === undefined) opts.onError?.(name, `expected 1 to ${MAX_KEY_BYTES} bytes, got ${data.length}`);
    } catch (err) {
      opts.onError?.(name, (err as NodeJS.ErrnoException).code ?? 'unreadable');
    }
    cache.set(name, { key, readAt: now });
    return key;
  };
  return {
    forDocument(names) {
      const allowed = new Set(names);
      return (name) => (allowed.has(name) ? read(name) : undefined);
    },
  };
}
