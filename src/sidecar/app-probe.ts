import net from 'node:net';

/**
 * Whether the local app answers: a GET of `readinessPath` when configured
 * (any status below 500), else a TCP connect. Bounded by `timeoutMs`.
 */
export async function probeApp(appUrl: string, readinessPath: string | undefined, timeoutMs: number): Promise<string> {
  const url = new URL(appUrl);
  if (readinessPath) {
    try {
      // undici only for a configured readiness path: a sidecar whose upstreams all speak HTTP/1.1 never loads it.
      const { request } = await import('undici');
      const res = await request(new URL(readinessPath, url), { method: 'GET', signal: AbortSignal.timeout(timeoutMs) });
      await res.body.dump();
      return res.statusCode < 500 ? 'ok' : `app answered ${res.statusCode} on ${readinessPath}`;
    } catch (err) {
      return `app unreachable: ${(err as Error).message}`;
    }
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
    const done = (result: string): void => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => done('app connect timed out'));
    socket.once('connect', () => done('ok'));
    socket.once('error', (err) => done(`app unreachable: ${err.message}`));
  });
}
