import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';

/** Reads a secret by file name; undefined when it cannot be read (the caller fails closed). */
export type SecretFiles = (name: string) => Promise<string | undefined>;

const MAX_SECRET_BYTES = 4096;
/** A plain file name: policy can name a secret the operator mounted, never walk the sidecar's file system. */
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$/;

/**
 * Client secrets named by policy (`introspection.clientSecretFile`), read from
 * one folder the operator chose for them. Policy documents are written by
 * namespace owners; confining names to that folder keeps a document from
 * sending, say, the workload's private key to an endpoint it controls.
 * A value is re-read after `refreshMs` (secret rotation) and the last good
 * one kept when a re-read fails. Never logs a value.
 */
export function createSecretFiles(dir: string, deps: { clock: Clock; logger?: Logger; refreshMs?: number }): SecretFiles {
  const refreshMs = deps.refreshMs ?? 60_000;
  const cache = new Map<string, { value: string | undefined; readAt: number }>();
  return async (name) => {
    if (!FILE_NAME.test(name) || name.includes('..')) return undefined;
    const now = deps.clock.now();
    const cached = cache.get(name);
    if (cached && now - cached.readAt < refreshMs) return cached.value;
    let value = cached?.value;
    try {
      const text = await readFile(path.join(dir, name), 'utf8');
      if (Buffer.byteLength(text) > MAX_SECRET_BYTES) throw new Error(`larger than ${MAX_SECRET_BYTES} bytes`);
      // Kubernetes Secrets and `echo` both leave a trailing newline that is not part of the secret.
      value = text.replace(/\r?\n$/, '');
    } catch (err) {
      deps.logger?.error(
        { component: 'authn', file: path.join(dir, name), error: (err as NodeJS.ErrnoException).code ?? (err as Error).message },
        value === undefined ? 'client secret file unreadable: token introspection is unavailable' : 'client secret file unreadable: keeping the value read before',
      );
    }
    cache.set(name, { value, readAt: now });
    return value;
  };
}
