import type { AddressInfo, Server } from 'node:net';
import { isIP } from 'node:net';

/**
 * Binds `server` and resolves with the bound address (for port 0, the port the
 * OS chose); a bind error (EADDRINUSE, EACCES) rejects instead of crashing the
 * process as an unhandled 'error' event would. `reusePort`: several processes
 * bind the same port and the kernel spreads connections among them (Linux
 * SO_REUSEPORT); `exclusive` with it, or a cluster worker would ask its primary
 * for a shared handle instead of binding its own.
 */
export function listenOn(server: Server, port: number, host: string, opts: { readonly reusePort?: boolean } = {}): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const options = opts.reusePort ? { port, host, reusePort: true, exclusive: true } : { port, host };
    server.listen(options, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** What binding and stopping need of a grpc-js Server (core imports no gRPC). */
export interface GrpcServerLike<Credentials> {
  bindAsync(port: string, credentials: Credentials, callback: (error: Error | null, port: number) => void): void;
  tryShutdown(callback: (error?: Error) => void): void;
  forceShutdown(): void;
}

/**
 * Binds a gRPC server and resolves with its port. grpc-js reports every bind
 * failure as one message: address-in-use becomes an error with code
 * EADDRINUSE, address and port, as node:net's, so the CLI prints it the same way.
 */
export async function bindGrpc<C>(server: GrpcServerLike<C>, address: string, port: number, credentials: C): Promise<number> {
  const where = isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
  try {
    return await new Promise<number>((resolve, reject) => server.bindAsync(where, credentials, (err, bound) => (err ? reject(err) : resolve(bound))));
  } catch (err) {
    const message = (err as Error).message;
    if (/EADDRINUSE|address already in use/i.test(message)) throw Object.assign(new Error(`address in use: ${where}`), { code: 'EADDRINUSE', address, port });
    throw new Error(`cannot listen on ${where}: ${message}`);
  }
}

/** Lets in-flight gRPC calls finish for up to `graceMs`, then cuts the rest. */
export function stopGrpc(server: GrpcServerLike<unknown>, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
