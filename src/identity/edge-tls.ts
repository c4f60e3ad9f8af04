import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import type { Logger } from '../telemetry/logger.ts';

export interface EdgeTls {
  readonly server: tls.Server;
  close(): void;
}

/**
 * TLS for callers outside the mesh, from certificate files (cert-manager,
 * a Kubernetes secret). The files are watched through their folder, which
 * also catches the atomic symlink swap Kubernetes uses for mounted secrets;
 * a change that does not parse is logged and the last good pair keeps serving.
 */
export async function createEdgeTls(files: { certFile: string; keyFile: string }, deps: { logger: Logger; handshakeTimeoutMs: number }): Promise<EdgeTls> {
  const load = async (): Promise<tls.SecureContextOptions> => {
    const [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
    const options = { cert, key, minVersion: 'TLSv1.2' as const };
    tls.createSecureContext(options); // throws on a mismatched or unparsable pair
    return options;
  };
  const server = tls.createServer({ ...(await load()), ALPNProtocols: ['h2', 'http/1.1'], handshakeTimeout: deps.handshakeTimeoutMs });
  let timer: NodeJS.Timeout | undefined;
  const reload = (): void => {
    clearTimeout(timer);
    // Writers replace cert and key in two steps; wait for both before reading.
    timer = setTimeout(() => {
      load().then(
        (options) => {
          server.setSecureContext(options);
          deps.logger.info({ certFile: files.certFile }, 'edge TLS certificate reloaded');
        },
        (err: Error) => deps.logger.error({ certFile: files.certFile, err: err.message }, 'edge TLS certificate not reloaded; keeping the previous one'),
      );
    }, 100);
  };
  const folders = new Set([path.dirname(path.resolve(files.certFile)), path.dirname(path.resolve(files.keyFile))]);
  const watchers: FSWatcher[] = [...folders].map((folder) => watch(folder, { persistent: false }, reload));
  return {
    server,
    close() {
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
