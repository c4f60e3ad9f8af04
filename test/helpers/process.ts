import net from 'node:net';
import { request } from 'undici';
import { eventually } from './eventually.ts';

/** A port the OS says is free right now (for child processes that need a number up front). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls a /live URL until it answers 200, or throws after `timeoutMs`. */
export async function waitForLive(url: string, timeoutMs: number): Promise<void> {
  await eventually(
    async () => {
      const res = await request(url, { signal: AbortSignal.timeout(1000) });
      await res.body.dump();
      return res.statusCode;
    },
    { until: (status) => status === 200, timeoutMs, intervalMs: 50, what: `${url} to be live` },
  );
}
