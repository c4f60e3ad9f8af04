import { startNodeServer } from './node-server.ts';
import type { Target } from './target.ts';

/** Baseline: the `http-proxy` package with a keep-alive agent, one Node process. */
export function createHttpProxyTarget(): Target {
  return {
    id: 'http-proxy',
    label: 'node http-proxy',
    start: async (context) => {
      try {
        const { child, port } = await startNodeServer(context.group, 'http-proxy', 'http-proxy.ts', [context.upstreamUrl], context.startTimeoutMs);
        return { ok: true, started: { url: `http://127.0.0.1:${port}/`, headers: {}, stop: () => child.stop() } };
      } catch (err) {
        return { ok: false, reason: (err as Error).message };
      }
    },
  };
}
