import type { AddressInfo, Server } from 'node:net';

/**
 * Binds `server` and resolves with the bound address (for port 0, the port the
 * OS chose); a bind error (EADDRINUSE, EACCES) rejects instead of crashing the
 * process as an unhandled 'error' event would.
 */
export function listenOn(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
